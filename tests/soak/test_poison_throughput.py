"""Throughput with and without poison, same worker, same machine, one run.

The benchmark's event mix (`moments.bench.bench_events`), clean, and with one record
in 20 replaced by a malformed one (bad JSON, missing fields, wrong types, key
mismatch, in turn; in a second poisoned run also 70 KB over-size records, which
multiply the bytes read). Each stream goes to its own topics and is read by a fresh
worker, timed like `moments bench` does; clean first and last, so the figures show
how much the machine's load moved between runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from rich.console import Console

from moments.bench import bench_events, detector_consume
from moments.embedded_run import all_topics
from moments.models import EventType
from moments.settings import Settings
from moments.topics import ensure_topics
from tests.integration.conftest import MakeSettings
from tests.integration.kafka_io import read_topic

pytestmark = [pytest.mark.soak, pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("SOAK_EVENTS", "100000"))
SUBSCRIBERS = EVENTS // 10
EVERY = 20

Raw = tuple[EventType, bytes | None, bytes]


def poison(
    n: int, event_type: EventType, key: bytes, value: bytes, oversize: bool
) -> tuple[Raw, str]:
    """A malformed stand-in for record `n`, and the dead-letter reason it must get; the
    over-size kind only with `oversize` (70 KB each: it changes the bytes read)."""
    sub = key.decode()
    kinds = (0, 1, 2, 3, 4) if oversize else (0, 1, 2, 4)
    kind = kinds[(n // EVERY) % len(kinds)]
    if kind == 0:
        return (event_type, key, value[: len(value) // 2]), "invalid_json"
    if kind == 1:
        return (event_type, key, orjson.dumps({"event_id": f"p{n}", "subscriber_id": sub})), (
            "invalid_event"
        )
    if kind == 2:
        bad = orjson.loads(value) | {"occurred_at": "yesterday", "subscriber_id": 7}
        return (event_type, key, orjson.dumps(bad)), "invalid_event"
    if kind == 3:
        big = orjson.loads(value) | {"note": "x" * 70_000}
        return (event_type, key, orjson.dumps(big)), "too_large"
    return (event_type, b"13000000000", value), "key_mismatch"


def stream(poisoned: bool, oversize: bool) -> tuple[list[Raw], list[str]]:
    records: list[Raw] = []
    reasons: list[str] = []
    for n, (event_type, key, value) in enumerate(bench_events(EVENTS, SUBSCRIBERS)):
        if poisoned and n % EVERY == EVERY - 1:
            record, reason = poison(n, event_type, key, value, oversize)
            records.append(record)
            reasons.append(reason)
        else:
            records.append((event_type, key, value))
    return records, reasons


async def produce_all(settings: Settings, records: Iterator[Raw] | list[Raw]) -> None:
    topics, compacted = all_topics(settings)
    await ensure_topics(settings.kafka_bootstrap, topics, compacted)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=1024 * 1024,
    )
    await producer.start()
    try:
        pending = []
        for event_type, key, value in records:
            pending.append(
                await producer.send(settings.topic(event_type.value), value=value, key=key)
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def test_throughput_holds_with_one_record_in_20_malformed(
    make_settings: MakeSettings, report_figure: Callable[[str], None], tmp_path: Path
) -> None:
    console = Console(stderr=True, quiet=True)
    rates: list[tuple[str, float]] = []
    runs = (
        ("clean", False, False),
        ("1 in 20 poison, none over-size", True, False),
        ("1 in 20 poison, a fifth of it over-size", True, True),
        ("clean again", False, False),
    )
    for n, (label, poisoned, oversize) in enumerate(runs):
        tag = f"run{n}"
        settings = make_settings(
            partitions=4,
            app_id=f"soak-{tag}-{os.getpid()}",
            topic_prefix=f"soak{tag}{os.getpid()}.",
        )
        records, reasons = stream(poisoned, oversize)
        asyncio.run(produce_all(settings, records))
        workdir = tmp_path / tag
        workdir.mkdir()
        measured, rss, _ = detector_consume(settings, len(records), workdir, console, latency_s=0)
        assert measured.events == len(records)
        if poisoned:
            dead = asyncio.run(read_topic(settings, "deadletter", len(reasons), settle=2))
            got = sorted(dict(d.headers)["__dlq.errors.reason"].decode() for d in dead)
            assert got == sorted(reasons)
        rates.append((label, measured.rate))
        megabytes = sum(len(value) for _, _, value in records) / 1e6
        report_figure(
            f"poison soak, {label}: {measured.events:,} records ({megabytes:.1f} MB), "
            f"{measured.events - measured.before:,} of them timed in {measured.seconds:.2f} s: "
            f"{measured.rate:,.0f} records/s, peak RSS {rss:.0f} MiB"
            + (f", {len(reasons):,} dead letters" if poisoned else "")
        )
    clean = (rates[0][1] + rates[3][1]) / 2
    report_figure(
        f"poison soak: poisoned / mean of the clean runs = {rates[1][1] / clean:.2f} "
        f"(none over-size), {rates[2][1] / clean:.2f} (with over-size) "
        f"({os.cpu_count()} CPU cores shared with everything else running; "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)"
    )
