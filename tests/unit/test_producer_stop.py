"""A one-off command's producer whose stop never ends (an idempotent producer still
retrying a write not acknowledged in time) does not hang the command on its way out."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from moments import producer as producer_module
from moments import seed
from moments.settings import Settings


class _StuckProducer:
    """Acknowledges every batch, but its stop waits for ever (as aiokafka's does for a
    batch it keeps retrying)."""

    def __init__(self) -> None:
        self.stop_called = False

    async def stop(self) -> None:
        self.stop_called = True
        await asyncio.Event().wait()


async def test_stop_within_gives_up_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    stuck = _StuckProducer()
    with caplog.at_level(logging.WARNING, logger="moments.producer"):
        stopped = await producer_module.stop_within(stuck, 0.05)
    assert stuck.stop_called
    assert stopped is False
    assert (
        "did not stop within 0.05 s: left behind with the writes it still retried, which the "
        "broker has not acknowledged (it may or may not be written)"
    ) in caplog.text


async def test_stop_within_reports_a_producer_that_stopped() -> None:
    class _Quick:
        async def stop(self) -> None:
            return None

    assert await producer_module.stop_within(_Quick(), 0.05) is True


@pytest.mark.timeout(20)
async def test_a_seed_whose_producer_will_not_stop_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck = _StuckProducer()

    async def start(settings: Settings, **kwargs: Any) -> _StuckProducer:
        return stuck

    async def written(
        producer: object, topic: str, chunk: Any, *a: Any, **k: Any
    ) -> dict[int, int]:
        return {}  # every record acknowledged: only the stop is stuck

    monkeypatch.setattr(producer_module, "start_producer", start)
    monkeypatch.setattr(producer_module, "STOP_S", 0.05, raising=False)
    monkeypatch.setattr("sinks.base.produce_to_partitions", written)
    records = [(0, b"k", b"v")]
    count = await asyncio.wait_for(
        seed.write_records(Settings(), "moments-state-changelog", records), 10
    )
    assert count == 1
    assert stuck.stop_called


class _StuckAfterSends(_StuckProducer):
    """aiokafka's producer as `moments bench`'s load and `moments run`'s sample use it:
    every record taken, the stop stuck."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.sent = 0

    async def start(self) -> None:
        return None

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        """The record's future, acknowledged, as aiokafka's send gives it (the load reads
        them once flushed)."""
        self.sent += 1
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:
        self.sent += 1

    async def flush(self) -> None:
        return None


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> _StuckAfterSends:
    """The producer the commands make, a stuck one (`_StuckAfterSends`); their bound short."""
    made = _StuckAfterSends()
    monkeypatch.setattr("moments.latency.AIOKafkaProducer", lambda *a, **k: made)
    monkeypatch.setattr("moments.embedded_run.AIOKafkaProducer", lambda *a, **k: made)
    monkeypatch.setattr(producer_module, "STOP_S", 0.05)
    monkeypatch.setattr("moments.embedded_run.STOP_S", 0.05)
    return made


@pytest.mark.timeout(20)
async def test_the_bench_load_whose_producer_will_not_stop_returns_and_says_so(
    stuck: _StuckAfterSends, caplog: pytest.LogCaptureFixture
) -> None:
    from moments.latency import offer

    with caplog.at_level(logging.WARNING, logger="moments.producer"):
        await asyncio.wait_for(offer(Settings(), 100, 0.05), 10)
    assert stuck.sent
    assert stuck.stop_called
    assert "left behind with the load's last events" in caplog.text


@pytest.mark.timeout(20)
async def test_the_run_sample_whose_producer_will_not_stop_returns_and_says_so(
    stuck: _StuckAfterSends, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from moments.embedded_run import _play_sample

    async def profiles_read(*args: Any, **kwargs: Any) -> bool:
        return True  # the worker's commits: no broker here

    monkeypatch.setattr("moments.embedded_run.committed_to_end", profiles_read)
    settings = Settings(metrics_port=0)  # no /metrics: the profiles waited for by commits
    with caplog.at_level(logging.WARNING, logger="moments.producer"):
        await asyncio.wait_for(_play_sample(settings, Console(quiet=True)), 10)
    assert stuck.sent
    assert stuck.stop_called
    assert "left behind with the sample's last event" in caplog.text
