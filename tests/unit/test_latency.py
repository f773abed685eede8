"""Quantiles from two snapshots of a Prometheus histogram, as `moments bench` reports them."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import ClassVar

import pytest
from aiokafka import errors as k

from moments.latency import quantile
from moments.settings import Settings

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket() -> None:
    before = {0.1: 10.0, 0.5: 10.0, 1.0: 10.0, INF: 10.0}
    # 100 new observations: 50 under 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1].
    after = {0.1: 60.0, 0.5: 100.0, 1.0: 110.0, INF: 110.0}
    assert quantile(0.5, before, after) == 0.1
    assert math.isclose(quantile(0.7, before, after), 0.1 + 0.4 * (20 / 40))
    assert math.isclose(quantile(0.99, before, after), 0.5 + 0.5 * (9 / 10))


def test_no_observation_is_nan_and_the_open_bucket_gives_its_floor() -> None:
    same = {0.1: 5.0, INF: 5.0}
    assert math.isnan(quantile(0.5, same, same))
    assert quantile(0.99, {0.1: 0.0, INF: 0.0}, {0.1: 0.0, INF: 3.0}) == 0.1


class _SomeSendsFail:
    """aiokafka's producer for `offer`: every other send of a first roaming (a task event)
    and every 7th of the others fail as a batch the broker did not take; the others are
    acknowledged. Counts its calls."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.calls: Counter[str] = Counter()
        self.sent: list[tuple[str, bool]] = []
        """(topic, acknowledged) of each send."""
        _SomeSendsFail.made.append(self)

    made: ClassVar[list[_SomeSendsFail]] = []

    async def start(self) -> None:
        self.calls["start"] += 1

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[object]:
        self.calls["send"] += 1
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        kind = "roaming" if topic.endswith("roaming") else "other"
        self.calls[kind] += 1
        failed = self.calls[kind] % (2 if kind == "roaming" else 7) == 0
        self.sent.append((topic, not failed))
        if failed:
            future.set_exception(k.KafkaTimeoutError())
        else:
            future.set_result(None)
        return future

    async def flush(self) -> None:
        self.calls["flush"] += 1

    async def stop(self) -> None:
        self.calls["stop"] += 1


async def test_sends_the_broker_failed_are_counted_said_and_make_no_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sends' acknowledgements were never read: a failed send went unnoticed, its
    task counted (the bench waited for it, and timed fewer events than it said)."""
    from moments import latency

    monkeypatch.setattr(latency, "AIOKafkaProducer", _SomeSendsFail)
    _SomeSendsFail.made.clear()
    offered = await latency.offer(Settings(), 2000, 0.3)
    producer = _SomeSendsFail.made[0]
    sent = producer.calls["send"]
    assert sent >= 100
    # Nothing per event but the send: no await of its future, no callback, no extra call.
    assert producer.calls["roaming"] >= 2
    assert producer.calls == Counter(
        start=1,
        send=sent,
        flush=1,
        stop=1,
        roaming=producer.calls["roaming"],
        other=sent - producer.calls["roaming"],
    )
    assert not isinstance(offered, int), "offer returned only its task count"
    failed = sum(not ok for _, ok in producer.sent)
    assert (offered.events, offered.unacknowledged) == (sent, failed)
    assert offered.first_error == "KafkaTimeoutError"
    assert offered.said() == (
        f"{failed:,} of the {sent:,} events offered were not acknowledged "
        "(KafkaTimeoutError): the load offered was that much less, and the tasks counted are "
        "those of events acknowledged"
    )
    # A task is counted for each first roaming acknowledged, none for those that failed.
    roamings = [ok for topic, ok in producer.sent if topic.endswith("roaming")]
    assert offered.tasks == sum(roamings) == len(roamings) // 2


def test_the_bench_waits_for_the_acknowledged_tasks_and_keeps_what_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`moments bench`'s latency phase waits for the tasks of acknowledged events only (it
    waited a minute for those of failed sends), and its line says what failed."""
    import os

    from rich.console import Console

    from moments import bench, latency

    offered = latency.Offered(
        tasks=3, events=100, unacknowledged=4, first_error="KafkaTimeoutError"
    )

    async def offer(*args: object, **kwargs: object) -> latency.Offered:
        on_warm = kwargs["on_warm"]
        assert callable(on_warm)
        on_warm()
        return offered

    scraped = iter([{0.1: 0.0, INF: 0.0}, {0.1: 3.0, INF: 3.0}])
    monkeypatch.setattr(latency, "offer", offer)
    monkeypatch.setattr(latency, "buckets", lambda port: next(scraped))
    measured = bench.measure_latency(Settings(), 0, os.getpid(), 100.0, 1.0, Console(quiet=True))
    assert (measured.tasks, measured.p50) == (3, 0.05)
    assert measured.unacknowledged == offered.said() != ""
