"""BatchConsumer.seek_while_paused: a seek that fails during a rebalance (the partition
was just taken away) does not stop the fetcher, and what was queued is dropped."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError

from moments.consumer import BatchConsumer


class Paused:
    """What seek_while_paused touches of a consumer."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.sought = 0
        self.invalidated = 0

    async def perform_seek(self) -> None:
        self.sought += 1
        if self.error is not None:
            raise self.error

    def invalidate(self) -> None:
        self.invalidated += 1


async def test_a_partition_taken_away_meanwhile_is_a_warning_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake: Any = Paused(IllegalStateError("No current assignment for partition usage[0]"))
    with caplog.at_level(logging.WARNING, logger="moments.consumer"):
        await BatchConsumer.seek_while_paused(fake)
    assert (fake.sought, fake.invalidated) == (1, 1)
    assert "No current assignment" in caplog.text


async def test_a_seek_that_works_is_left_as_it_is() -> None:
    fake: Any = Paused(None)
    await BatchConsumer.seek_while_paused(fake)
    assert (fake.sought, fake.invalidated) == (1, 0)  # perform_seek invalidates itself
