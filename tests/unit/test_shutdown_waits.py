"""The bounded waits of a stop (moments.shutdown.within) name what held them: a batch
held by a Redis that is down was reported as the broker not taking the last commit."""

from __future__ import annotations

import asyncio
import logging

import pytest

from moments.shutdown import within


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_batch_still_running_is_named_not_the_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="moments.shutdown"):
        await within(forever(), 0.01, "the last commit", "read again", lambda: False)
    [record] = caplog.records
    assert "the batch in progress did not finish within 0.01 s" in record.getMessage()
    assert "moments_dependency_up" in record.getMessage()
    assert "broker" not in record.getMessage()


async def test_with_the_batch_done_the_broker_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="moments.shutdown"):
        await within(forever(), 0.01, "the last commit", "read again", lambda: True)
    [record] = caplog.records
    assert record.getMessage().startswith("the broker did not take the last commit within")


async def test_a_step_in_time_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="moments.shutdown"):
        await within(asyncio.sleep(0), 1.0, "the last commit", "read again", lambda: False)
    assert caplog.records == []


@pytest.mark.parametrize("batch_done", [False, True])
async def test_the_wait_is_said_in_few_digits(
    caplog: pytest.LogCaptureFixture, batch_done: bool
) -> None:
    """The time left of a stop's budget, computed: a stop during a Redis outage said
    `did not finish within 9.99991 s`."""
    with caplog.at_level(logging.WARNING, logger="moments.shutdown"):
        await within(forever(), 0.0123456, "the last commit", "read again", lambda: batch_done)
    [record] = caplog.records
    assert "within 0.0123 s" in record.getMessage()
