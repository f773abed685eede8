"""A worker started before its broker waits for it (moments.worker.wait_for_kafka): it
keeps trying, keeps its heartbeat, says it still waits, and goes on once Kafka answers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from moments import worker
from moments.app import create_app, register_agents
from moments.engine import Detector
from moments.exceptions import ConfigError
from moments.health import Health
from moments.runtime import Runtime
from moments.settings import load_settings
from rules.catalog import RuleSet
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_it_keeps_its_heartbeat_while_the_returns_topic_waits_for_kafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the wait for Kafka, a worker creates its cooldown returns topic, retried with
    back-off for as long as Kafka does not take the create (a controller moving, the
    broker gone again): no beat then, before Faust's loop runs, so /livez failed after
    MOMENTS_HEALTH_STALL_SECONDS and Kubernetes restarted a worker that only waited for its
    broker, which the operations guide says /livez never does."""
    clock = FakeClock()
    health = Health(60, clock=clock)
    live_while_waiting: list[bool] = []

    async def create_topics(*args: object, **kwargs: object) -> None:
        clock.now += 300  # five minutes of retries
        for _ in range(3):
            await asyncio.sleep(0)  # what a retry's back-off does: the loop runs others
        live_while_waiting.append(health.live().ok)

    monkeypatch.setattr(worker, "create_topics", create_topics)
    settings = load_settings(kafka_bootstrap="127.0.0.1:1")
    await worker.ensure_returns_topic(settings, Metrics(), health)
    assert live_while_waiting == [True]


async def test_faust_start_beats_before_the_first_recovery_is_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """Faust starts an app's timers only once its first table recovery is over: a beat
    kept as a timer left the group join, the bulk restore and Faust's recovery (and a
    broker gone again meanwhile) with nothing beating, /livez failed after
    MOMENTS_HEALTH_STALL_SECONDS, and Kubernetes restarted a worker restoring its state.
    The app beats from its own start, before the consumer or the tables start."""
    monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
    clock = FakeClock()
    health = Health(60, clock=clock)
    settings = load_settings()
    app = create_app(settings)
    register_agents(
        app, settings, Runtime(settings, Metrics(), Detector(RuleSet.of([]), {})), health
    )
    await app.on_start()  # what Faust runs first, before the consumer and the tables
    try:
        clock.now += 300  # nothing of the start returned for five minutes
        for _ in range(3):
            await asyncio.sleep(0)  # the loop runs others meanwhile (a restore's chunks)
        assert health.live().ok
        assert health.live().detail.startswith("event loop ran")
    finally:
        for future in list(app._futures):
            future.cancel()


class _StopHereError(Exception):
    """Ends `_prepare` once the preflight returned: what follows needs a broker."""


def test_it_keeps_its_heartbeat_while_the_preflight_tries_each_bootstrap_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """The preflight tries each bootstrap server in turn, up to ~16 s each when it says
    nothing, after /livez is served and before anything beats: four silent servers of a
    list ran past the 60 s MOMENTS_HEALTH_STALL_SECONDS, and Kubernetes restarted a worker
    that only looked for its broker. It runs beating, as the wait for Kafka does."""
    monkeypatch.setenv("MOMENTS_DATA_DIR", str(tmp_path))
    clock = FakeClock()
    made: list[Health] = []

    def health_of(stall_after_s: float) -> Health:
        made.append(Health(stall_after_s, clock=clock))
        return made[-1]

    live_while_trying: list[bool] = []

    async def preflight(settings: object) -> dict[str, int] | None:
        clock.now += 4 * 16  # four silent servers, one after the other
        for _ in range(3):
            await asyncio.sleep(0)  # what a connection's wait does: the loop runs others
        live_while_trying.append(made[0].live().ok)
        raise _StopHereError

    monkeypatch.setattr(worker, "Health", health_of)
    monkeypatch.setattr(worker, "preflight", preflight)
    settings = load_settings(kafka_bootstrap="10.0.0.1:9092,10.0.0.2:9092", metrics_port=0)
    assert settings.health_stall_seconds == 60
    with pytest.raises(_StopHereError):
        worker._prepare(settings, [])
    assert live_while_trying == [True]


def test_it_keeps_its_heartbeat_while_it_checks_that_kafka_grants_an_idempotent_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MOMENTS_IDEMPOTENT_PRODUCER=true: the start waits up to 30 s for a producer id,
    after /livez is served and before Faust's loop beats, and nothing beat meanwhile: with
    the waits before it (the preflight, the wait for Kafka, the returns topic) a start ran
    past the 60 s MOMENTS_HEALTH_STALL_SECONDS. It runs beating, as those waits do."""
    clock = FakeClock()
    health = Health(60, clock=clock)
    live_while_checking: list[bool] = []

    async def idempotence_refused(settings: object) -> str | None:
        clock.now += 61  # the other waits and this one, together past the stall limit
        for _ in range(3):
            await asyncio.sleep(0)  # what a producer's start does: the loop runs others
        live_while_checking.append(health.live().ok)
        return None

    monkeypatch.setattr(worker, "idempotence_refused", idempotence_refused)
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", idempotent_producer=True)
    worker.require_idempotence(settings, health)
    assert live_while_checking == [True]


def test_a_broker_that_never_grants_a_producer_stops_the_start_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def idempotence_refused(settings: object) -> str | None:
        await asyncio.Event().wait()  # a broker that accepts connections, never answers
        return None

    monkeypatch.setattr(worker, "idempotence_refused", idempotence_refused)
    monkeypatch.setattr(worker, "IDEMPOTENCE_CHECK_S", 0.05)
    settings = load_settings(kafka_bootstrap="127.0.0.1:1", idempotent_producer=True)
    with pytest.raises(ConfigError, match=r"advertised listeners.*MOMENTS_IDEMPOTENT_PRODUCER"):
        worker.require_idempotence(settings, Health(60))
