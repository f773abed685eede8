"""The sink protocol: `add()` items as a batch is processed, `flush()` makes them durable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

Headers = Sequence[tuple[str, bytes]]


class Sink(Protocol[T_contra]):
    def add(self, item: T_contra) -> None: ...

    async def flush(self) -> None:
        """Return only when everything added is durable (or raise)."""
        ...


class Producer(Protocol):
    """The part of aiokafka's producer the sinks use."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]: ...


async def produce_all(
    producer: Producer, messages: Sequence[tuple[str, bytes | None, bytes | None, Headers | None]]
) -> None:
    """Send every (topic, key, value, headers) and wait for all acknowledgements."""
    futures = [
        await producer.send(topic, value=value, key=key, headers=headers)
        for topic, key, value, headers in messages
    ]
    await asyncio.gather(*futures)


async def produce_to_partitions(
    producer: Producer, topic: str, records: Sequence[tuple[int, bytes, bytes | None]]
) -> None:
    """Send every (partition, key, value) to `topic` and wait for all acknowledgements."""
    futures = [
        await producer.send(topic, value=value, key=key, partition=partition)
        for partition, key, value in records
    ]
    await asyncio.gather(*futures)


class RecordingSink(Generic[T]):
    """Keeps what was added and flushed; the sink tests and `run_pipeline` use."""

    def __init__(self) -> None:
        self.pending: list[T] = []
        self.flushed: list[T] = []

    def add(self, item: T) -> None:
        self.pending.append(item)

    async def flush(self) -> None:
        self.flushed.extend(self.pending)
        self.pending.clear()
