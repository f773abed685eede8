"""Kafka consumer figures for ops: lag per input partition, offset-commit latency, rebalances.

Faust's own Prometheus sensor has no lag metric and reports milliseconds in its
own namespace; these are `moments_*` metrics in seconds on the worker's registry.

- Lag = end offset (highwater) minus the group's committed offset, per assigned
  input partition, sampled by a timer (`LagSampler.sample`: one ListOffsets
  request per sample, no per-record work).
- Commit latency: every offset commit goes through Faust's
  `Consumer._commit_offsets` (Faust's own commits and the batch loop's
  `commit_processed`), so `time_commits` wraps that one method on the consumer.
- Rebalances: a Faust `Sensor` counts them and times each one, recovery included.

`install(app, metrics, topics)` wires all three onto an app; `moments.worker` calls it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from faust import Sensor
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
"""How often lag is sampled; a Prometheus scrape interval of 15 s sees fresh values."""
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REBALANCE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ConsumerMetrics:
    """The consumer's figures, on the same injected registry as `sinks.metrics.Metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.lag = Gauge(
            "moments_consumer_lag",
            "Records not yet committed: end offset minus committed offset, per input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.end_offset = Gauge(
            "moments_consumer_end_offset",
            "End offset (highwater) of an assigned input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "moments_consumer_committed_offset",
            "Committed offset of the consumer group on an assigned input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "moments_consumer_commit_seconds",
            "Time to commit the consumer's offsets (one commit request)",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.rebalances = Counter(
            "moments_consumer_rebalances",
            "Consumer-group rebalances this worker took part in",
            registry=r,
        )
        self.rebalance_seconds = Histogram(
            "moments_consumer_rebalance_seconds",
            "Rebalance duration, from revocation to the end of table recovery",
            buckets=REBALANCE_BUCKETS,
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "moments_consumer_assigned_partitions",
            "Input partitions assigned to this worker",
            registry=r,
        )


def partition_lag(end_offset: int | None, committed: int | None) -> int | None:
    """Records between the committed offset and the end; None while the end is unknown.

    A partition the group never committed on counts from 0: everything in it is unread
    (retention may have removed the oldest records, so this can over-count until the
    first commit).
    """
    if end_offset is None or end_offset < 0:
        return None
    return max(0, end_offset - (committed or 0))


class LagSampler:
    """Reads end and committed offsets of the assigned input partitions into the gauges."""

    def __init__(self, metrics: ConsumerMetrics, topics: Iterable[str]) -> None:
        self.metrics = metrics
        self.topics = frozenset(topics)
        self._shown: set[tuple[str, str]] = set()

    def update(self, ends: Mapping[TP, int | None], committed: Mapping[TP, int | None]) -> None:
        """Set the gauges from offsets; drop the series of partitions no longer assigned."""
        m = self.metrics
        shown: set[tuple[str, str]] = set()
        for tp, end in ends.items():
            labels = (tp.topic, str(tp.partition))
            lag = partition_lag(end, committed.get(tp))
            if lag is None or end is None:
                continue
            m.end_offset.labels(*labels).set(end)
            m.committed_offset.labels(*labels).set(committed.get(tp) or 0)
            m.lag.labels(*labels).set(lag)
            shown.add(labels)
        for labels in self._shown - shown:
            for gauge in (m.lag, m.end_offset, m.committed_offset):
                gauge.remove(*labels)
        self._shown = shown
        m.assigned_partitions.set(len(ends))

    async def sample(self, consumer: Any) -> None:
        """One sample from a Faust consumer (its committed offsets are Faust's own view)."""
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.topics]
        ends: Mapping[TP, int | None] = {}
        if assigned:
            try:
                ends = await consumer.highwaters(*assigned)
            except Exception as exc:  # a broker hiccup must not stop the timer
                log.debug("lag sample skipped: %s", exc)
                return
        committed: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
        self.update(ends, committed)


CommitOffsets = Callable[..., Awaitable[bool]]


def time_commits(consumer: Any, metrics: ConsumerMetrics) -> None:
    """Time each offset commit the consumer makes (those that commit something)."""
    commit: CommitOffsets = consumer._commit_offsets

    async def timed(offsets: Mapping[TP, int], *args: Any, **kwargs: Any) -> bool:
        started = time.perf_counter()
        done = await commit(offsets, *args, **kwargs)
        if done:
            metrics.commit_seconds.observe(time.perf_counter() - started)
        return done

    consumer._commit_offsets = timed


class RebalanceSensor(Sensor):
    """Counts rebalances and their duration (Faust's sensor hooks)."""

    def __init__(self, metrics: ConsumerMetrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    def on_rebalance_start(self, app: Any) -> dict[str, float]:
        self.metrics.rebalances.inc()
        return {"time_start": time.monotonic()}

    def on_rebalance_end(self, app: Any, state: dict[str, float]) -> None:
        started = state.get("time_start")
        if started is not None:
            self.metrics.rebalance_seconds.observe(time.monotonic() - started)


def install(
    app: Any, registry: CollectorRegistry, topics: Iterable[str], interval: float = LAG_INTERVAL_S
) -> ConsumerMetrics:
    """Register the consumer figures on a Faust app: sensor, commit timing, lag timer."""
    metrics = ConsumerMetrics(registry)
    sampler = LagSampler(metrics, topics)
    app.sensors.add(RebalanceSensor(metrics))
    wrapped: list[Any] = []

    async def sample_consumer_lag() -> None:
        consumer = app.consumer
        if consumer not in wrapped:  # the consumer exists once the worker runs
            time_commits(consumer, metrics)
            wrapped.append(consumer)
        await sampler.sample(consumer)

    app.timer(interval=interval, name="moments.sample_consumer_lag")(sample_consumer_lag)
    return metrics
