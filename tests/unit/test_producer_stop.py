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
    assert "did not stop within 0.05 s" in caplog.text


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
