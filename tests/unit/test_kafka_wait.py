"""A worker started before its broker waits for it (moments.worker.wait_for_kafka): it
keeps trying, keeps its heartbeat, says it still waits, and goes on once Kafka answers."""

from __future__ import annotations

import logging

import pytest

from moments import worker
from moments.health import Health
from moments.settings import load_settings
from sinks.metrics import Metrics


async def test_it_tries_until_kafka_answers_and_says_so_meanwhile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def check_kafka(settings: object, report: bool = True) -> dict[str, int]:
        assert report is False  # an unreachable broker raises, for the retries
        calls.append(1)
        if len(calls) < 8:
            raise ConnectionError("no answer from 127.0.0.1:1: ConnectionRefusedError()")
        return {"telecom.usage": 4}

    monkeypatch.setattr(worker, "check_kafka", check_kafka)
    monkeypatch.setattr(worker, "KAFKA_WAIT_MAX_S", 0.6)
    monkeypatch.setattr(worker, "KAFKA_WAIT_LOG_S", 0.5)
    settings = load_settings(kafka_bootstrap="127.0.0.1:1")
    metrics = Metrics()
    health = Health(30)
    caplog.set_level(logging.WARNING)
    counts = await worker.wait_for_kafka(settings, metrics, health)
    assert counts == {"telecom.usage": 4}
    assert len(calls) == 8
    assert metrics.dependency_up.labels("kafka")._value.get() == 1  # back up
    assert metrics.dependency_errors.labels("kafka")._value.get() == 7
    assert "still waiting for Kafka at 127.0.0.1:1 after 1 s" in caplog.text
    assert health.live().detail.startswith("event loop ran")  # it beat while it waited
    assert health.ready().detail.startswith("waiting for Kafka at 127.0.0.1:1")
