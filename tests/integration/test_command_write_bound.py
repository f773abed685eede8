"""A one-off command whose write the broker stops answering mid-way ends within its bound
with `KafkaWriteError` (one line, exit 2: tests/unit/test_command_write_failures.py).

`moments tasks ack` waited for aiokafka's batch expiry (`request_timeout_ms`, 40 s) and
ended in its KafkaTimeoutError's traceback; `moments state seed` ended in one too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer

import sinks.base
from moments import ack, seed
from moments import producer as producer_module
from moments.ack import build_outcome, write_outcome
from moments.embedded import TansuBroker
from moments.exceptions import ConfigError
from moments.models import OutcomeStatus
from moments.settings import load_settings

from .fault_tools import freeze, frozen_once_queued, thaw

pytestmark = pytest.mark.integration

WRITE_S = 2.0
"""The ack's wait in the test (10 s in a command)."""
STOP_S = 1.0
"""The producer's stop in the test (10 s in a command)."""
BOUND_S = WRITE_S + sinks.base.ASK_AFRESH_S + STOP_S + 5.0
"""The acknowledgement's wait, the broker asked afresh, the stop, and room for a loaded
machine: well before the batch's expiry (40 s), the wait before."""


@pytest.mark.timeout(120)
async def test_an_ack_whose_broker_freezes_mid_write_ends_within_its_bound_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = TansuBroker(tmp_path / "tansu")

    monkeypatch.setattr(ack, "AIOKafkaProducer", frozen_once_queued(broker))
    monkeypatch.setattr(ack, "WRITE_S", WRITE_S, raising=False)  # none in the old source
    monkeypatch.setattr(producer_module, "STOP_S", STOP_S)
    app_id = f"t{uuid4().hex[:10]}a"
    with broker:
        settings = load_settings(
            kafka_bootstrap=broker.bootstrap, app_id=app_id, topic_prefix=f"{app_id}."
        )
        task_id = uuid4().hex
        outcome = build_outcome(task_id, "13800138000", OutcomeStatus.UNREACHABLE)
        started = time.monotonic()
        try:
            with pytest.raises(Exception) as raised:  # noqa: PT011 - its type is asserted
                await asyncio.wait_for(write_outcome(settings, outcome), 60)
        finally:
            thaw(broker)
        took = time.monotonic() - started
    assert isinstance(raised.value, ConfigError), raised.value  # KafkaWriteError: exit 2
    assert took < BOUND_S
    said = str(raised.value)
    assert said.startswith(
        f"task {task_id}'s unreachable outcome was not written to "
        f"{app_id}.moments.task-outcomes: KafkaTimeoutError: 1 write(s) to "
        f"{app_id}.moments.task-outcomes not acknowledged in {WRITE_S:g} s: "
    )
    assert said.endswith(
        "It may have reached the topic all the same: once `moments check` says the broker "
        "answers, look for it there before writing it again"
    )
    assert "\n" not in said


@pytest.mark.timeout(120)
async def test_a_seed_whose_broker_freezes_mid_write_says_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = TansuBroker(tmp_path / "tansu")
    batches = 0

    class FrozenAfterFirstChunk(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
        """aiokafka's producer; the broker frozen once the second chunk's batch is sent."""

        async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal batches
            future = await super().send_batch(*args, **kwargs)
            batches += 1
            if batches == 2:
                freeze(broker)
            return future

    start = producer_module.start_producer

    async def frozen_start(settings: Any, **kwargs: Any) -> AIOKafkaProducer:
        return await start(settings, factory=FrozenAfterFirstChunk, **kwargs)

    monkeypatch.setattr(producer_module, "start_producer", frozen_start)
    monkeypatch.setattr(producer_module, "STOP_S", STOP_S)
    monkeypatch.setattr(sinks.base, "DELIVERY_TIMEOUT_S", WRITE_S)
    monkeypatch.setattr(seed, "WRITE_CHUNK", 2)
    app_id = f"t{uuid4().hex[:10]}s"
    topic = f"{app_id}-subscribers-changelog"
    records = [(0, str(n).encode(), b"{}") for n in range(3)]
    with broker:
        settings = load_settings(
            kafka_bootstrap=broker.bootstrap, app_id=app_id, topic_prefix=f"{app_id}."
        )
        started = time.monotonic()
        try:
            with pytest.raises(Exception) as raised:  # noqa: PT011 - its type is asserted
                await asyncio.wait_for(seed.write_records(settings, topic, records), 60)
        finally:
            thaw(broker)
        took = time.monotonic() - started
    assert isinstance(raised.value, ConfigError), raised.value  # KafkaWriteError: exit 2
    assert took < BOUND_S + 10  # the producer's start, its producer id refused, included
    said = str(raised.value)
    assert said.startswith(f"the seed stopped after 2 of 3 record(s) written to {topic}: ")
    assert said.endswith("seed again with --replace (a record written twice is the same record)")
