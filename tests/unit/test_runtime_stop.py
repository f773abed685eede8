"""Shutdown with the broker gone: the producer's last flush is bounded, so the worker
stops within Kubernetes' grace period instead of waiting out the request timeout."""

from __future__ import annotations

import asyncio
import logging

import pytest

from moments import runtime as runtime_module
from moments.engine import Detector
from moments.runtime import Runtime
from moments.settings import load_settings
from sinks.metrics import Metrics


class _StuckProducer:
    """A producer whose records in flight never reach a broker (aiokafka's stop waits
    for them until its request timeout)."""

    def __init__(self) -> None:
        self.stopping = False

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.sleep(3600)


async def test_a_stuck_last_flush_is_given_up_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime_module, "LAST_FLUSH_S", 0.2)
    runtime = Runtime(load_settings(), Metrics(), Detector.__new__(Detector))
    producer = _StuckProducer()
    runtime._producer = producer
    runtime.ready.set()
    with caplog.at_level(logging.WARNING, logger="moments.shutdown"):
        # Not a timing: a stop that waited for the producer would hang for an hour.
        await asyncio.wait_for(runtime.stop(), 60)
    assert producer.stopping
    assert not runtime.ready.is_set()
    assert "did not take the records in flight within 0.2 s" in caplog.text
    assert "MOMENTS_KAFKA_BOOTSTRAP" in caplog.text
