"""The task viewer's Kafka consumer closes within a bound: a close the broker never
answers must not keep Ctrl-C of `moments run` from stopping the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from moments import tail
from moments.settings import Settings


class StuckOnStop:
    """Answers what the viewer asks of a consumer, and never finishes closing."""

    stopped = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions: list[Any]) -> None:
        pass

    async def seek_to_end(self, *partitions: Any) -> None:
        pass

    async def position(self, partition: Any) -> int:
        return 0

    async def stop(self) -> None:
        StuckOnStop.stopped = True
        await asyncio.sleep(3600)


async def test_a_close_that_never_ends_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail, "AIOKafkaConsumer", StuckOnStop)
    monkeypatch.setattr(tail, "STOP_S", 0.2)
    # Without the bound this waits the consumer's hour and wait_for fails it.
    printed = await asyncio.wait_for(tail.tail_tasks(Settings(), exit_after=0), 10)
    assert printed == 0
    assert StuckOnStop.stopped
