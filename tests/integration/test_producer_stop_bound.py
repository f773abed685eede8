"""A command stopped while the broker does not answer its write ends within its bound
(`moments.producer.stop_within`) and says what it left behind.

`moments tasks ack` awaited its producer's stop without a bound: stopped (Ctrl-C, which
cancels the command's task) while a frozen broker held its outcome, the stop waited for
the batch to expire (aiokafka's `request_timeout_ms`, 40 s) with no word."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from uuid import uuid4

import pytest

from moments import ack
from moments import producer as producer_module
from moments.ack import build_outcome, write_outcome
from moments.embedded import TansuBroker
from moments.models import OutcomeStatus
from moments.settings import load_settings

from .fault_tools import frozen_once_queued, thaw

pytestmark = pytest.mark.integration

STOP_S = 1.0
"""The bound in the test (10 s in a command)."""
WITHIN_S = 15.0
"""How long the test waits for the stopped command: well past the bound, well before the
batch's expiry (40 s), the wait before."""


@pytest.mark.timeout(120)
async def test_an_ack_stopped_while_the_broker_holds_its_outcome_ends_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queued = asyncio.Event()
    broker = TansuBroker(tmp_path / "tansu")

    monkeypatch.setattr(ack, "AIOKafkaProducer", frozen_once_queued(broker, queued))
    monkeypatch.setattr(producer_module, "STOP_S", STOP_S)
    app_id = f"t{uuid4().hex[:10]}a"
    with broker:
        settings = load_settings(
            kafka_bootstrap=broker.bootstrap, app_id=app_id, topic_prefix=f"{app_id}."
        )
        task_id = uuid4().hex
        outcome = build_outcome(task_id, "13800138000", OutcomeStatus.UNREACHABLE)
        try:
            with caplog.at_level(logging.WARNING, logger="moments.producer"):
                writing = asyncio.create_task(write_outcome(settings, outcome))
                await asyncio.wait_for(queued.wait(), 60)
                await asyncio.sleep(0.5)  # the request sent, unanswered
                writing.cancel()  # what Ctrl-C does to the command's task
                started = time.monotonic()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(writing, WITHIN_S)
                took = time.monotonic() - started
        finally:
            thaw(broker)
    assert took < WITHIN_S
    assert (
        f"the Kafka producer did not stop within {STOP_S:g} s: left behind with task "
        f"{task_id}'s unreachable outcome to {app_id}.moments.task-outcomes, which the "
        "broker has not acknowledged (it may or may not be written)"
    ) in caplog.text
