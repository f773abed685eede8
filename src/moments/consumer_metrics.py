"""Kafka consumer figures for ops: lag per partition read, offset-commit latency, rebalances.

Faust's own Prometheus sensor has no lag metric and reports milliseconds in its
own namespace; these are `moments_*` metrics in seconds on the worker's registry.

- Lag = end offset (highwater) minus the group's committed offset (the log start offset
  where there is none: reading starts there), per assigned partition of the input
  topics, of the internal topic of cooldown returns and of the task outcomes (the worker
  reads all three; a partition it stopped reading shows as lag like an input one),
  counted from the log start offset where the committed offset is older than it (retention
  deleted the records: reading resumes at the start), sampled by a timer
  (`LagSampler.sample`: two ListOffsets requests per sample, the end and the start
  offsets, sent together; no per-record work).
- Commit latency: every offset commit goes through Faust's
  `Consumer._commit_offsets` (Faust's own commits and the batch loop's
  `commit_processed`), so `time_commits` wraps that one method on the consumer.
- Rebalances: a Faust `Sensor` counts them and times each one, recovery included.
- Broker reachability: the consumer's own fetch and group requests retry a lost
  broker silently (aiokafka only logs), so the lag sample doubles as a probe: a
  sample that fails or takes over 80% of its interval (4 s) counts in
  `moments_dependency_errors_total{dependency="kafka"}` and sets
  `moments_dependency_up{dependency="kafka"}` to 0; the next good one sets it to 1. A
  sample whose end offsets came back but not the log start offsets counts the error
  without marking Kafka down, and reads that sample's lag from the committed offsets.
  The log start lookup has its own, shorter wait (`START_SHARE` of the sample's): one
  that hangs costs only the start offsets, not the whole sample, and is not asked again
  until it ends (it runs on in Faust's consumer thread: `LagSampler._starts`).

`install(app, registry, topics, health=metrics, internal=[returns, outcomes])` wires
them onto an app; `moments.worker` calls it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from faust import Sensor
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sinks.metrics import Dependency, Metrics

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
"""How often lag is sampled; a Prometheus scrape interval of 15 s sees fresh values."""
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REBALANCE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
START_SHARE = 0.75
"""The log start lookup's wait, as a share of the sample's: a lookup that hangs is given
up before the sample is, so the end offsets (asked at the same time) still make the lag,
read from the committed offsets; with one wait for both, a hung start lookup made the
whole sample fail (every partition's lag NaN, Kafka marked down while it answered)."""


class ConsumerMetrics:
    """The consumer's figures, on the same injected registry as `sinks.metrics.Metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.lag = Gauge(
            "moments_consumer_lag",
            "Records not yet committed: end offset minus committed offset (or log start offset, "
            "before the first commit or when the commit is older), per partition read "
            "(input topics, the cooldown returns topic and the task outcomes topic)",
            ["topic", "partition"],
            registry=r,
        )
        self.end_offset = Gauge(
            "moments_consumer_end_offset",
            "End offset (highwater) of an assigned partition read",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "moments_consumer_committed_offset",
            "Committed offset of the consumer group on an assigned partition read",
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


def partition_lag(
    end_offset: int | None, committed: int | None, start: int | None = None
) -> int | None:
    """Records between where reading resumes and the end; None while the end is unknown.

    Reading resumes at the committed offset, or at the log's start (`start`, its first
    offset still kept) when there is none or it is older than that (retention deleted
    the records: the consumer resets to the start, `auto_offset_reset=earliest`). Without
    `start`, from 0: a partition never committed on, of a topic whose retention had
    deleted old segments, showed millions of records waiting that no longer existed.
    """
    if end_offset is None or end_offset < 0:
        return None
    return max(0, end_offset - max(committed or 0, start or 0))


class LagSampler:
    """Reads end and committed offsets of the assigned partitions of `topics` (the input)
    and `internal` (the cooldown returns, the task outcomes) into the gauges; only the
    input partitions count in `moments_consumer_assigned_partitions`."""

    def __init__(
        self,
        metrics: ConsumerMetrics,
        topics: Iterable[str],
        health: Metrics | None = None,
        timeout: float = LAG_INTERVAL_S,
        internal: Iterable[str] = (),
    ) -> None:
        self.metrics = metrics
        self.topics = frozenset(topics)
        self.internal = frozenset(internal)
        self.health = health
        self.timeout = timeout
        self._shown: set[tuple[str, str]] = set()
        self._failures = 0
        self._start_failures = 0
        self._start_lookup: asyncio.Future[Mapping[TP, int | None]] | None = None
        """The last log start lookup asked (see `_starts`)."""

    def update(
        self,
        ends: Mapping[TP, int | None],
        committed: Mapping[TP, int | None],
        starts: Mapping[TP, int | None] | None = None,
    ) -> None:
        """Set the gauges from offsets (`starts`: the partitions' log start offsets, where
        reading resumes when there is no committed offset or it is older); drop the series
        of partitions no longer assigned."""
        m = self.metrics
        starts = starts or {}
        shown: set[tuple[str, str]] = set()
        for tp, end in ends.items():
            labels = (tp.topic, str(tp.partition))
            lag = partition_lag(end, committed.get(tp), starts.get(tp))
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
        m.assigned_partitions.set(sum(1 for tp in ends if tp.topic not in self.internal))

    async def sample(self, consumer: Any) -> None:
        """One sample from a Faust consumer (its committed offsets are Faust's own view).
        A worker with no input partition (more workers than partitions) asks for one
        partition's end all the same: it is how the broker's absence shows on it too (its
        `dependency_up{kafka}` stood at 1 through an outage). The log start is asked of
        every assigned partition: a committed offset older than it (retention deleted the
        records since the group's last commit, a worker stopped for days) counted the
        deleted records as lag until the next commit; asked only with no committed offset,
        a restart after a long stop showed a backlog that no longer existed."""
        read = self.topics | self.internal
        assigned = [tp for tp in consumer.assignment() if tp.topic in read]
        probe = assigned or ([TP(min(self.topics), 0)] if self.topics else [])
        committed: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
        ends: Mapping[TP, int | None] = {}
        starts: Mapping[TP, int | None] | BaseException = {}
        if probe:
            try:
                ends, starts = await asyncio.wait_for(
                    self._offsets(consumer, probe, assigned), self.timeout
                )
            except Exception as exc:  # a broker hiccup must not stop the timer
                self.broker_failed(exc)
                return
            self.broker_answered()
        if isinstance(starts, BaseException):
            self.start_failed(starts)
            starts = {}
        elif self._start_failures:
            log.info("kafka answers the log start lookup again")
            self._start_failures = 0
        self.update(ends if assigned else {}, committed, starts)

    def start_failed(self, exc: BaseException) -> None:
        """The end offsets came back but not the log start offsets: Kafka answers, so it
        is not marked down (a whole sample counted as failed, lag NaN and
        `dependency_up{kafka}` 0, over one lookup); the error is counted and logged once
        per run of them, and the lag read from the committed offsets as before the start
        was asked (it may count records retention deleted)."""
        self._start_failures += 1
        if self.health is not None:
            self.health.dependency_errors.labels(Dependency.KAFKA.value).inc()
        if self._start_failures == 1:
            log.warning(
                "kafka did not answer the log start lookup of the lag sample (%s); the lag "
                "is read from the committed offsets until it does",
                _said(exc, self.timeout * START_SHARE),
            )

    def broker_failed(self, exc: BaseException) -> None:
        """A sample the broker did not answer: counted, logged once per outage, and the
        lag unknown (NaN) until it answers: the last value stood still and read 0 through
        an outage while thousands of events waited."""
        self._failures += 1
        if self.health is not None:
            self.health.dependency_errors.labels(Dependency.KAFKA.value).inc()
            self.health.dependency_up.labels(Dependency.KAFKA.value).set(0)
        for labels in self._shown:
            self.metrics.lag.labels(*labels).set(math.nan)
        if self._failures == 1:
            log.warning(
                "kafka did not answer the lag sample (%s); the consumer reconnects by "
                "itself; if this lasts, check the broker and MOMENTS_KAFKA_BOOTSTRAP",
                _said(exc, self.timeout),
            )

    def broker_answered(self) -> None:
        if self.health is not None:
            self.health.dependency_up.labels(Dependency.KAFKA.value).set(1)
        if self._failures:
            log.warning("kafka answers again after %d failed lag sample(s)", self._failures)
            self._failures = 0

    async def _offsets(
        self, consumer: Any, probe: list[TP], assigned: list[TP]
    ) -> tuple[Mapping[TP, int | None], Mapping[TP, int | None] | BaseException]:
        """The end offsets of `probe`, and the log start offsets of `assigned`, asked
        together; a failed end lookup raises, a failed start lookup (or one not answered
        within its wait) is returned as its error."""
        if not assigned:
            return await consumer.highwaters(*probe), {}
        ends: Mapping[TP, int | None] | BaseException
        starts: Mapping[TP, int | None] | BaseException
        ends, starts = await asyncio.gather(
            consumer.highwaters(*probe), self._starts(consumer, assigned), return_exceptions=True
        )
        if isinstance(ends, BaseException):
            raise ends
        if isinstance(starts, Exception):
            return ends, starts
        if isinstance(starts, BaseException):  # cancelled: not a lookup that failed
            raise starts
        return ends, starts

    async def _starts(self, consumer: Any, assigned: list[TP]) -> Mapping[TP, int | None]:
        """The log start offsets of `assigned`, waited for `START_SHARE` of the sample's
        wait. A lookup not answered by then is not asked again while it runs: Faust runs
        it on its consumer thread, whose two workers run the end lookups, the fetches and
        the commits too, and a wait given up (cancelled) left it running there all the
        same. Asked again each sample, two hung lookups took both workers, and the next
        sample's end lookup waited behind them: the whole sample failed, Kafka marked down
        while it answered (and the worker's fetches and commits waited as well). The next
        samples wait for that same lookup instead, and use its answer if it comes."""
        lookup = self._start_lookup
        if lookup is None or lookup.done():
            lookup = self._start_lookup = asyncio.ensure_future(
                consumer.earliest_offsets(*assigned)
            )
            lookup.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({lookup}, timeout=self.timeout * START_SHARE)
        if not done:
            raise TimeoutError()
        return lookup.result()


def _retrieve(lookup: asyncio.Future[Any]) -> None:
    """A lookup's error is the sample's to report: retrieved here, so one that ended after
    its sample gave up is not logged as an exception never retrieved."""
    if not lookup.cancelled():
        lookup.exception()


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
    app: Any,
    registry: CollectorRegistry,
    topics: Iterable[str],
    interval: float = LAG_INTERVAL_S,
    health: Metrics | None = None,
    internal: Iterable[str] = (),
) -> ConsumerMetrics:
    """Register the consumer figures on a Faust app: sensor, commit timing, lag timer.

    With `health`, a failed lag sample counts as a Kafka dependency error there.
    `internal`: topics the app reads besides the input (their lag is sampled too)."""
    metrics = ConsumerMetrics(registry)
    # A sample slower than 80% of the interval counts as failed (no overlapping timer).
    sampler = LagSampler(metrics, topics, health=health, timeout=interval * 0.8, internal=internal)
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


def _said(exc: BaseException, timeout: float) -> str:
    """An error for the log: a timeout's text is empty ("TimeoutError: " told nothing)."""
    if str(exc):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return type(exc).__name__
