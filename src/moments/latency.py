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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from moments.connections import kafka_client_kwargs
from moments.metrics_server import scrape_samples
from moments.producer import error_said, stop_within
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


@dataclass(frozen=True)
class Offered:
    """What `offer` sent, and what the broker did not take."""

    tasks: int
    """Events sent after the warm-up that make a task, the broker's acknowledgement of
    each received: those the worker can time."""
    events: int
    """Events sent, warm-up included."""
    unacknowledged: int = 0
    """Of `events`, those whose send failed (the broker's error, or the batch's expiry)."""
    first_error: str = ""
    """The first of their errors, as one line names it; empty when every send went."""

    def said(self) -> str:
        """What the bench line adds when sends failed; empty when none did."""
        if not self.unacknowledged:
            return ""
        return (
            f"{self.unacknowledged:,} of the {self.events:,} events offered were not "
            f"acknowledged ({self.first_error}): the load offered was that much less, and "
            "the tasks counted are those of events acknowledged"
        )


async def offer(
    settings: Settings,
    rate: float,
    seconds: float,
    seed: int = 11,
    warmup: float = 0.0,
    on_warm: Callable[[], None] | None = None,
) -> Offered:
    """Produce `rate` events a second for `warmup + seconds`; returns how many of the
    events sent after the warm-up make a task (of those the broker acknowledged), and
    how many sends failed. `on_warm` runs once, when the warm-up ends (the caller reads
    the histogram there).

    The sends' acknowledgements were never looked at: a send the broker failed went
    unnoticed, and its task was counted (the bench then waited a minute for tasks that
    never came, and its figures were of fewer events than it said). Each send's future is
    kept (a list append, no await nor callback while the load runs) and read once the load
    is flushed."""
    rng = random.Random(seed)  # noqa: S311 - load, not secrets
    zone = daytime_zone(dt.datetime.now(dt.UTC))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=1, **kafka_client_kwargs(settings)
    )
    await producer.start()
    sends: list[asyncio.Future[Any]] = []
    task_sends: list[asyncio.Future[Any]] = []  # those of task events after the warm-up
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
                task = rng.random() < TASK_SHARE
                if task:
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
                sent = await producer.send(
                    settings.topic(topic), value=orjson.dumps(value), key=sub.encode()
                )
                sends.append(sent)
                if task and warm:
                    task_sends.append(sent)
            sleep = started + (n / per_tick) * tick - time.perf_counter()
            await asyncio.sleep(max(0.0, sleep))
        await producer.flush()
    finally:
        # Bounded: stopped (Ctrl-C) while the broker did not answer, it waited out the
        # batches' expiry (40 s) with no word.
        await stop_within(producer, unsent="the load's last events")
    return acknowledgements(sends, task_sends)


def acknowledgements(
    sends: Sequence[asyncio.Future[Any]], task_sends: Sequence[asyncio.Future[Any]]
) -> Offered:
    """`offer`'s figures from its sends' futures, all done (flushed): a future not done is
    counted as not acknowledged, as one that failed."""
    failed = [f for f in sends if not f.done() or f.cancelled() or f.exception() is not None]
    first = ""
    if failed:
        f = failed[0]
        error = f.exception() if f.done() and not f.cancelled() else None
        first = error_said(error) if error is not None else "not answered"
    lost = set(map(id, failed))
    tasks = sum(1 for f in task_sends if id(f) not in lost)
    return Offered(tasks=tasks, events=len(sends), unacknowledged=len(failed), first_error=first)
