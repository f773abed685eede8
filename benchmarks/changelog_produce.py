"""CPU per record of writing a state changelog to a Tansu broker, as the worker does
(`sinks.base.produce_to_partitions`, 256 KiB batches) and one `send` per record.

    .venv/bin/python benchmarks/changelog_produce.py
    .venv/bin/python benchmarks/changelog_produce.py --records 4000 --size 500
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from moments.embedded import TansuBroker
from moments.producer import MAX_BATCH_BYTES
from moments.topics import ensure_topics
from sinks.base import produce_to_partitions

Records = list[tuple[int, bytes, bytes | None]]
Write = Callable[[AIOKafkaProducer, str, Records], Awaitable[object]]
"""One way to write the records: `produce_to_partitions` returns the offsets, the
others nothing."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_send_each(producer: AIOKafkaProducer, topic: str, records: Records) -> None:
    futures = [await producer.send(topic, value=v, key=k, partition=p) for p, k, v in records]
    await asyncio.gather(*futures)


async def stamped(producer: AIOKafkaProducer, topic: str, records: Records) -> None:
    """produce_to_partitions with each record's fencing stamp header, made per record as
    the state store makes them (moments.fence)."""
    headers = [[("moments-stamp", b"7")] for _ in records]
    await produce_to_partitions(producer, topic, records, headers)


async def run(bootstrap: str, records: Records, repeats: int) -> None:
    await ensure_topics(bootstrap, {"changelog": 4}, ["changelog"])
    ways: list[tuple[str, dict[str, int], Write]] = [
        ("send per record, aiokafka's 16 KiB batches", {}, one_send_each),
        (
            "produce_to_partitions, 256 KiB batches",
            {"max_batch_size": MAX_BATCH_BYTES},
            produce_to_partitions,
        ),
    ]
    if "headers" in inspect.signature(produce_to_partitions).parameters:
        ways.append(
            (
                "produce_to_partitions, 256 KiB batches, a stamp header each",
                {"max_batch_size": MAX_BATCH_BYTES},
                stamped,
            )
        )
    for label, options, write in ways:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, **options)
        await producer.start()
        await write(producer, "changelog", records)  # warm
        cpu, wall = _cpu(), time.perf_counter()
        for _ in range(repeats):
            await write(producer, "changelog", records)
        cpu, wall = (_cpu() - cpu) / repeats, (time.perf_counter() - wall) / repeats
        print(f"{label}: {wall * 1000:.1f} ms, {cpu / len(records) * 1e6:.1f} µs CPU per record")
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--size", type=int, default=500, help="value bytes per record")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    records: Records = [
        (i % 4, f"1300{i:07d}".encode(), b"x" * args.size) for i in range(args.records)
    ]
    with tempfile.TemporaryDirectory() as tmp, TansuBroker(Path(tmp)) as broker:
        asyncio.run(run(broker.bootstrap, records, args.repeats))


if __name__ == "__main__":
    main()
