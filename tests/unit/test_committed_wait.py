"""`moments run --metrics-port 0` waits for the sample's profiles by the worker's committed
offsets: with /metrics off it waited for nothing and then said it had waited 60 s."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from moments.committedwait import committed_to_end

TOPIC = "telecom.profile"


class _Group:
    """A consumer reading a group's committed offsets: `commits` are what successive
    reads of a partition see (the last one repeats)."""

    def __init__(self, ends: dict[int, int], commits: dict[int, list[int | None]]) -> None:
        self.ends = ends
        self.commits = commits
        self.started = False
        self.stopped = False
        self.group_id: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> _Group:
        self.group_id = kwargs["group_id"]
        return self

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert {tp.topic for tp in tps} == {TOPIC}
        return {tp: self.ends[tp.partition] for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        seen = self.commits[tp.partition]
        return seen.pop(0) if len(seen) > 1 else seen[0]


class TestCommittedToEnd:
    """True once the group has committed every partition of the topic to its end."""

    def test_true_once_every_partition_is_committed_to_its_end(self) -> None:
        group = _Group({0: 3, 1: 2, 2: 0}, {0: [None, 1, 3], 1: [2], 2: [None]})
        done = committed_to_end(
            ["127.0.0.1:1"], "moments", TOPIC, 3, timeout_s=10, poll_s=0.01, consumer=group
        )
        assert asyncio.run(done) is True
        assert group.group_id == "moments"
        assert group.stopped

    def test_false_when_the_group_never_gets_there(self) -> None:
        group = _Group({0: 3}, {0: [2]})
        done = committed_to_end(
            ["127.0.0.1:1"], "moments", TOPIC, 1, timeout_s=0.05, poll_s=0.01, consumer=group
        )
        assert asyncio.run(done) is False
        assert group.stopped

    def test_false_at_once_when_the_worker_is_gone(self) -> None:
        group = _Group({0: 3}, {0: [None]})
        done = committed_to_end(
            ["127.0.0.1:1"],
            "moments",
            TOPIC,
            1,
            timeout_s=600,
            poll_s=0.01,
            alive=lambda: False,
            consumer=group,
        )
        assert asyncio.run(asyncio.wait_for(done, 5)) is False
