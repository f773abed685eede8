"""Wait until a consumer group has committed a topic to its end: what `moments run` asks of
the worker when its /metrics is off (`--metrics-port 0`), to know it has read the sample's
profiles. The worker commits what it has processed once a second
(`moments.batchloop.COMMIT_EVERY_S`), so a commit at the end offsets says every record
written before was read and applied.

The offsets are read with a consumer that names the group but never subscribes: it joins
nothing (the worker's assignment is left alone) and leaves nothing when it stops; Tansu
answers its OffsetFetch, where it refuses the admin client's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

POLL_S = 0.5


async def committed_to_end(
    bootstrap: list[str],
    group: str,
    topic: str,
    partitions: int,
    timeout_s: float,
    *,
    poll_s: float = POLL_S,
    alive: Callable[[], bool] = lambda: True,
    consumer: Callable[..., Any] = AIOKafkaConsumer,
) -> bool:
    """True once `group` has committed each of the `partitions` of `topic` at least to the
    end offset it has when the wait begins; False after `timeout_s`, or at once when `alive`
    says the reader (the worker) is gone. Broker errors count as "not yet"."""
    reader = consumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    deadline = time.monotonic() + timeout_s
    try:
        await reader.start()
        ends: dict[TopicPartition, int] | None = None
        while time.monotonic() < deadline and alive():
            with contextlib.suppress(KafkaError, OSError):
                if ends is None:
                    tps = [TopicPartition(topic, p) for p in range(partitions)]
                    ends = {tp: end for tp, end in (await reader.end_offsets(tps)).items() if end}
                if ends is not None and await _reached(reader, ends):
                    return True
            await asyncio.sleep(poll_s)
        return False
    finally:
        await reader.stop()


async def _reached(reader: Any, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        committed = await reader.committed(tp)
        if committed is None or committed < end:
            return False
    return True
