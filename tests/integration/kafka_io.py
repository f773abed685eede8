"""Small helpers for integration tests: produce records and read a topic from the start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from moments.connections import kafka_client_kwargs
from moments.settings import Settings

log = logging.getLogger(__name__)


async def produce(
    settings: Settings,
    records: Iterable[tuple[str, str | None, bytes | Mapping[str, object] | None]],
    partitioner: Callable[[bytes, list[int], list[int]], int] | None = None,
) -> None:
    """Send (topic key, subscriber key, value) in order; topic key is a `Topics` field name.
    `partitioner` stands in for aiokafka's (murmur2) as another client's would."""
    extra: dict[str, Any] = {"partitioner": partitioner} if partitioner is not None else {}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        **kafka_client_kwargs(settings),
        **extra,
    )
    await producer.start()
    try:
        for name, key, value in records:
            raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
            await producer.send_and_wait(
                settings.topic(name), value=raw, key=key.encode() if key is not None else None
            )
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _from_the_beginning(
    settings: Settings, topic: str, deadline: float
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer of no group assigned every partition of `topic` (waited for until
    `deadline`, the time.monotonic() a read ends at), each at its beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        partitions = None
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(0.2)
        assert partitions, f"topic {topic} never appeared"
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer, tps
    finally:
        await consumer.stop()


async def read_topic(
    settings: Settings, name: str, count: int, wait_s: float = 60.0, settle: float = 0.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read every partition from the beginning until `count` records arrived (or timeout),
    then keep reading for `settle` seconds so an unexpected extra record is caught too."""
    topic = settings.topic(name)
    deadline = time.monotonic() + wait_s
    out: list[ConsumerRecord[bytes, bytes]] = []
    async with _from_the_beginning(settings, topic, deadline) as (consumer, tps):
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(records)
            if len(out) >= count:
                if settle_until is None:
                    settle_until = time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
        if len(out) < count:
            # Say what the reader saw, so a short read can be told from a missing record.
            ends = await consumer.end_offsets(tps)
            seen = {tp.partition: await consumer.position(tp) for tp in tps}
            log.warning(
                "%s: %d of %d record(s); positions %s; end offsets %s",
                topic,
                len(out),
                count,
                seen,
                {tp.partition: end for tp, end in ends.items()},
            )
    return out


async def read_written(
    settings: Settings, name: str, at_least: int = 0, wait_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on topic `name` up to the end offsets the broker gives when called
    (and on, within `wait_s`, until `at_least` arrived): for a topic whose writes the test
    has all awaited (a sink's flush, a replay), whatever was written, an extra record
    included, is in it. Where a writer still runs (a worker), `read_topic` with `settle`
    is what catches a record written after the call."""
    topic = settings.topic(name)
    deadline = time.monotonic() + wait_s
    out: list[ConsumerRecord[bytes, bytes]] = []
    async with _from_the_beginning(settings, topic, deadline) as (consumer, tps):
        # Tansu's end offset can lie inside a batch of many records (its first offset
        # plus one): a fetch returns the whole batch, and the position passes the end.
        ends = await consumer.end_offsets(tps)
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if len(out) >= at_least and all(
                at >= ends[tp] for at, tp in zip(positions, tps, strict=True)
            ):
                break
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        else:
            log.warning(
                "%s: read %d record(s) of at least %d in %s s", topic, len(out), at_least, wait_s
            )
    return out


async def wait_committed(port: int, topic: str, total: int, wait_s: float = 60.0) -> None:
    """Until a worker says (`moments_consumer_committed_offset`, sampled every few seconds)
    that it committed `total` records of `topic`, summed over its partitions: their
    batches' tasks and state changelog were durable before, which is the point a crash
    test means to kill it at."""
    labels = {"topic": topic}
    deadline = time.monotonic() + wait_s
    done = 0.0
    while time.monotonic() < deadline:
        done = await metric_value(port, "moments_consumer_committed_offset", labels)
        if done >= total:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the worker on :{port} committed {done:.0f} of {total} on {topic}")


def values(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.value is not None]


async def metrics_text(port: int) -> str:
    """A worker's /metrics page."""
    import urllib.request

    url = f"http://127.0.0.1:{port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read().decode())


def _matching(text: str, name: str, labels: dict[str, str] | None) -> list[float]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items())
    ]


def _sum(text: str, name: str, labels: dict[str, str] | None) -> float:
    return sum(_matching(text, name, labels))


async def metric_value(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of `name` matching `labels` on a worker's /metrics."""
    return _sum(await metrics_text(port), name, labels)


async def served_line(port: int, line: str, wait_s: float = 60.0) -> bool:
    """Whether the worker's /metrics shows `line` (a sample as written) within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if line in (await metrics_text(port)).splitlines():
                return True
        except OSError:
            pass
        await asyncio.sleep(0.3)
    return False


async def wait_for_metric(
    port: int, name: str, labels: dict[str, str], at_least: float, wait_s: float = 60.0
) -> float:
    """Poll a worker's /metrics until the sum of the samples matching `labels` reaches
    `at_least`; return it. The sum, not the last one: series start at 0 (every event type's
    `moments_events_total`, every rule's `moments_detected_total`), so `{}` matches many."""
    deadline = time.monotonic() + wait_s
    value = 0.0
    while time.monotonic() < deadline:
        try:
            text = await metrics_text(port)
        except OSError:
            await asyncio.sleep(0.3)
            continue
        value = _sum(text, name, labels)
        if value >= at_least:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"{name}{labels} stayed at {value} < {at_least} for {wait_s}s")


def http_get(port: int, path: str) -> tuple[int, str] | None:
    """Status and body of a local worker's `path` (a probe, say), or None while nothing
    listens on `port` yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return None
