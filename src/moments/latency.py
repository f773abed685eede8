"""Event-to-task latency at a fixed offered load: the second half of `moments bench`.

Events are produced at a steady rate, stamped with the time they are sent, and a
share of them are first international roamings of new subscribers, each of which
makes one task. The worker's `moments_event_to_task_seconds` histogram (event time
to publish) is read before and after; its quantiles come from the bucket counts.
The visited place is a zone where it is daytime, so quiet hours hold nothing back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import time
from collections.abc import Callable, Mapping

import orjson
from aiokafka import AIOKafkaProducer

from moments.connections import kafka_client_kwargs
from moments.metrics_server import scrape_samples
from moments.producer import stop_within
from moments.sample import daytime_zone
from moments.settings import Settings

HISTOGRAM = "moments_event_to_task_seconds"
TASK_SHARE = 0.05
"""Share of the offered events that make a task."""


def buckets(port: int) -> dict[float, float]:
    """Cumulative counts of the latency histogram, by upper bound (seconds): its buckets
    alone, not the whole /metrics page (`scrape_samples`)."""
    return {
        float(sample.labels["le"]): sample.value
        for sample in scrape_samples(port, f"{HISTOGRAM}_bucket", timeout=5)
    }


def quantile(q: float, before: Mapping[float, float], after: Mapping[float, float]) -> float:
    """The q-quantile of what was observed between two snapshots, interpolated linearly
    inside its bucket (as Prometheus' histogram_quantile does); nan with no observation."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


async def offer(
    settings: Settings,
    rate: float,
    seconds: float,
    seed: int = 11,
    warmup: float = 0.0,
    on_warm: Callable[[], None] | None = None,
) -> int:
    """Produce `rate` events a second for `warmup + seconds`; returns how many of the
    events sent after the warm-up make a task. `on_warm` runs once, when the warm-up ends
    (the caller reads the histogram there)."""
    rng = random.Random(seed)  # noqa: S311 - load, not secrets
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=1, **kafka_client_kwargs(settings)
    )
    await producer.start()
    tasks = 0
    try:
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        started = time.perf_counter()
        n = 0
        warm = False
        while (elapsed := time.perf_counter() - started) < warmup + seconds:
            if not warm and elapsed >= warmup:
                warm = True
                if on_warm is not None:
                    on_warm()
            now = dt.datetime.now(dt.UTC).isoformat()
            for _ in range(per_tick):
                n += 1
                if rng.random() < TASK_SHARE:
                    tasks += warm
                    sub = str(16_000_000_000 + n)
                    topic = "roaming"
                    value: dict[str, object] = {
                        "country": "GB",
                        "roaming_type": "international",
                        "timezone": zone,
                    }
                else:
                    sub = str(13_000_000_000 + rng.randrange(20_000))
                    topic = "usage"
                    value = {"kind": "data", "quantity": 1000, "charge": "0.01"}
                value |= {"event_id": f"lat-{seed}-{n}", "subscriber_id": sub, "occurred_at": now}
                await producer.send(
                    settings.topic(topic), value=orjson.dumps(value), key=sub.encode()
                )
            sleep = started + (n / per_tick) * tick - time.perf_counter()
            await asyncio.sleep(max(0.0, sleep))
        await producer.flush()
    finally:
        # Bounded: stopped (Ctrl-C) while the broker did not answer, it waited out the
        # batches' expiry (40 s) with no word.
        await stop_within(producer, unsent="the load's last events")
    return tasks
