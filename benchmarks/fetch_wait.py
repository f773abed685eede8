"""How long a single event waits to be read from a Tansu broker, by the consumer's fetch
wait (`MOMENTS_FETCH_WAIT_MS`): one event at a time, so every fetch finds the stream
quiet, as a worker's does between events under light load.

    .venv/bin/python benchmarks/fetch_wait.py
    .venv/bin/python benchmarks/fetch_wait.py --waits 100 20 --events 200
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from moments.embedded import TansuBroker
from moments.topics import ensure_topics

PARTITIONS = 4


async def delays(bootstrap: str, wait_ms: int, events: int, gap_s: float) -> list[float]:
    """Seconds from each event's send to its arrival at a consumer with this fetch wait."""
    topic = f"fetch-wait-{wait_ms}-{time.time_ns()}"
    await ensure_topics(bootstrap, {topic: PARTITIONS}, [])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, group_id=None
    )
    await producer.start()
    await consumer.start()
    await asyncio.sleep(1.0)  # the consumer's first fetches are out, the stream is quiet
    seen: list[float] = []

    async def read() -> None:
        while len(seen) < events:
            fetched = await consumer.getmany(timeout_ms=1000)
            now = time.perf_counter()
            seen.extend(now - float(m.value) for batch in fetched.values() for m in batch)

    reader = asyncio.create_task(read())
    try:
        for i in range(events):
            sent = str(time.perf_counter()).encode()
            await producer.send_and_wait(topic, sent, partition=i % PARTITIONS)
            await asyncio.sleep(gap_s)
        await asyncio.wait_for(reader, 30)
    finally:
        await producer.stop()
        await consumer.stop()
    return sorted(seen)


def _ms(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))] * 1000


async def run(bootstrap: str, waits: list[int], events: int, gap_s: float) -> None:
    for wait_ms in waits:
        got = await delays(bootstrap, wait_ms, events, gap_s)
        print(
            f"fetch wait {wait_ms:>4} ms: p50 {_ms(got, 0.5):5.1f} ms, "
            f"p90 {_ms(got, 0.9):5.1f} ms, max {got[-1] * 1000:5.1f} ms ({len(got)} events)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, nargs="+", default=[100, 50, 20, 10])
    parser.add_argument("--events", type=int, default=100, help="events per fetch wait")
    parser.add_argument("--gap", type=float, default=0.037, help="seconds between events")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, TansuBroker(Path(tmp)) as broker:
        asyncio.run(run(broker.bootstrap, args.waits, args.events, args.gap))


if __name__ == "__main__":
    main()
