"""A write the broker does not acknowledge is said to wait from `SLOW_ACK_S` (10 s), not
only when it fails at its 120 s deadline: a line of `sinks.writewaits`, and the gauge
`moments_kafka_write_wait_seconds` (the oldest write's wait, read at each scrape).

Before, a wedged idempotent producer (too few in-sync replicas) was silent for 120 s a
try; `moments_dependency_up` went 0 at each failed try, and the lag sample, which reads,
set it 1 again within 5 s, so MomentsDependencyDown did not fire (docs/operations.md,
"A write the broker does not acknowledge")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import errors as k
from prometheus_client import CollectorRegistry

import sinks.base
import sinks.writewaits
from sinks.base import acknowledged
from sinks.metrics import Metrics

from .test_delivery_deadline import Client

TASKS = "moments.tasks"
SLOW_S = 0.05
DEADLINE_S = 5.0


class Producer:
    """What `acknowledged` asks of aiokafka's producer: its client, which has the topic."""

    def __init__(self) -> None:
        self.client = Client({TASKS})


@pytest.fixture(autouse=True)
def slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.writewaits, "SLOW_ACK_S", SLOW_S, raising=False)
    monkeypatch.setattr(sinks.base, "SLOW_ACK_S", SLOW_S, raising=False)


def wait_s(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("moments_kafka_write_wait_seconds")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sinks.writewaits"]


@pytest.mark.timeout(30)
async def test_a_write_not_acknowledged_is_said_to_wait_long_before_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    assert wait_s(metrics) == 0
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    with caplog.at_level(logging.WARNING, logger="sinks.writewaits"):
        write = asyncio.ensure_future(
            acknowledged(Producer(), [answer], {TASKS}, deadline_s=DEADLINE_S)
        )
        for _ in range(200):  # at most 2 s, well before the 5 s deadline
            await asyncio.sleep(0.01)
            if lines(caplog):
                break
        waited = wait_s(metrics)
        assert not write.done()
        answer.set_result(None)  # acknowledged at last: the write goes through
        assert await write == [None]
    assert lines(caplog) == [
        f"{TASKS}: 1 write(s) not acknowledged in {SLOW_S:g} s, still waited for (up to "
        f"{DEADLINE_S:g} s, then the write fails): the broker is slow or away, or answers "
        "them with an error the producer retries (a partition without a leader, too few "
        "in-sync replicas); `moments check` says whether the broker answers; where it "
        "does, look at the topic's partitions (a leader each, enough in-sync replicas: "
        "kafka-topics.sh --describe)"
    ]
    assert waited is not None
    assert waited >= SLOW_S
    assert wait_s(metrics) == 0


@pytest.mark.timeout(30)
async def test_a_write_acknowledged_at_once_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    answer.set_result(None)
    with caplog.at_level(logging.WARNING, logger="sinks.writewaits"):
        assert await acknowledged(Producer(), [answer], {TASKS}, deadline_s=DEADLINE_S) == [None]
    assert lines(caplog) == []
    assert wait_s(metrics) == 0


@pytest.mark.timeout(30)
async def test_a_write_failing_at_its_deadline_or_cancelled_no_longer_counts() -> None:
    metrics = Metrics(CollectorRegistry())
    loop = asyncio.get_running_loop()
    with pytest.raises(k.KafkaTimeoutError):
        await acknowledged(Producer(), [loop.create_future()], {TASKS}, deadline_s=0.01)
    assert wait_s(metrics) == 0
    write = asyncio.ensure_future(
        acknowledged(Producer(), [loop.create_future()], {TASKS}, deadline_s=DEADLINE_S)
    )
    await asyncio.sleep(0.01)
    assert (wait_s(metrics) or 0) > 0
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert wait_s(metrics) == 0
