"""Consumer figures: lag arithmetic, gauges per assigned partition, commit timing, rebalances."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from faust.types import TP
from prometheus_client import CollectorRegistry

from moments.consumer_metrics import (
    ConsumerMetrics,
    LagSampler,
    RebalanceSensor,
    partition_lag,
    time_commits,
)
from sinks.metrics import Metrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class TestPartitionLag:
    @pytest.mark.parametrize(
        ("end", "committed", "lag"),
        [(100, 40, 60), (100, 100, 0), (100, None, 100), (0, None, 0), (5, 9, 0)],
    )
    def test_lag_is_end_minus_committed_never_negative(
        self, end: int, committed: int | None, lag: int
    ) -> None:
        assert partition_lag(end, committed) == lag

    @pytest.mark.parametrize(
        ("end", "committed", "start", "lag"),
        [(900, None, 850, 50), (900, 870, 850, 30), (900, 10, 850, 50), (900, None, 0, 900)],
    )
    def test_reading_resumes_at_the_log_start_when_it_is_later(
        self, end: int, committed: int | None, start: int, lag: int
    ) -> None:
        assert partition_lag(end, committed, start) == lag

    @pytest.mark.parametrize("end", [None, -1])
    def test_unknown_end_offset_gives_no_lag(self, end: int | None) -> None:
        assert partition_lag(end, 3) is None


class TestLagSampler:
    def test_gauges_follow_the_assignment(self) -> None:
        registry = CollectorRegistry()
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"])
        a, b = TP("in.usage", 0), TP("in.usage", 1)
        sampler.update({a: 120, b: 50}, {a: 100})
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 20
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="1") == 50
        assert sample(registry, "moments_consumer_end_offset", topic="in.usage", partition="0")
        committed = "moments_consumer_committed_offset"
        assert sample(registry, committed, topic="in.usage", partition="0") == 100
        assert sample(registry, committed, topic="in.usage", partition="1") == 0  # none yet
        assert sample(registry, "moments_consumer_assigned_partitions") == 2
        sampler.update({b: 60}, {b: 60})  # partition 0 moved to another worker
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") is None
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="1") == 0
        assert sample(registry, "moments_consumer_assigned_partitions") == 1

    async def test_sample_reads_a_consumer_and_ignores_other_topics(self) -> None:
        registry = CollectorRegistry()
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"])
        hot, changelog = TP("in.usage", 0), TP("app-subscribers-changelog", 0)

        class FakeConsumer:
            _committed_offset: Mapping[TP, int] = {hot: 7}

            def assignment(self) -> set[TP]:
                return {hot, changelog}

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                assert set(tps) == {hot}
                return {hot: 10}

            async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
                return dict.fromkeys(tps, 0)

        await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 3
        assert (
            sample(registry, "moments_consumer_lag", topic=changelog.topic, partition="0") is None
        )

    async def test_the_cooldown_returns_topic_is_sampled_not_counted_as_input(self) -> None:
        """The batch loop reads the internal topic of cooldown returns with the input: a
        partition of it that it stopped reading shows as lag like an input partition
        (it had no series, so nobody saw), but it is no input partition."""
        registry = CollectorRegistry()
        returns = "moments-cooldown-returns"
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], internal=[returns])
        usage, returned = TP("in.usage", 0), TP(returns, 0)

        class FakeConsumer:
            _committed_offset: Mapping[TP, int] = {usage: 10, returned: 1}

            def assignment(self) -> set[TP]:
                return {usage, returned}

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                assert set(tps) == {usage, returned}
                return {usage: 10, returned: 4}

            async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
                return dict.fromkeys(tps, 0)

        await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_consumer_lag", topic=returns, partition="0") == 3
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 0
        assert sample(registry, "moments_consumer_assigned_partitions") == 1

    async def test_a_partition_never_committed_counts_from_its_log_start(self) -> None:
        """A partition the group never committed on is read from its log start (the first
        offset retention kept), not from 0: a topic whose old segments were deleted showed
        a lag of its whole history, millions of records that no longer exist."""
        registry = CollectorRegistry()
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"])
        fresh, read = TP("in.usage", 0), TP("in.usage", 1)
        asked: list[tuple[TP, ...]] = []

        class FakeConsumer:
            _committed_offset: Mapping[TP, int | None] = {read: 2_000_100}

            def assignment(self) -> set[TP]:
                return {fresh, read}

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                return {fresh: 5_000_040, read: 2_000_160}

            async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
                asked.append(tps)
                return {fresh: 5_000_000}

        await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 40
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="1") == 60
        assert [set(tps) for tps in asked] == [{fresh, read}]

    async def test_a_commit_older_than_the_log_start_counts_from_the_start(self) -> None:
        """Retention deleted records past the group's committed offset (a worker stopped
        for days): reading resumes at the log start, and the deleted records are no lag.
        They counted as lag until the next commit (the start was asked only of partitions
        with no committed offset)."""
        registry = CollectorRegistry()
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"])
        behind, ahead = TP("in.usage", 0), TP("in.usage", 1)

        class FakeConsumer:
            _committed_offset: Mapping[TP, int | None] = {behind: 1_000, ahead: 2_000_100}

            def assignment(self) -> set[TP]:
                return {behind, ahead}

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                return {behind: 5_000_040, ahead: 2_000_160}

            async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
                return {behind: 5_000_000, ahead: 1_500_000}

        await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 40
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="1") == 60
        committed = "moments_consumer_committed_offset"
        assert sample(registry, committed, topic="in.usage", partition="0") == 1_000


class TestBrokerProbe:
    """A lag sample the broker does not answer is a Kafka dependency error; the next good
    one marks Kafka up again (the consumer's own retries are only logged by aiokafka)."""

    @staticmethod
    def consumer(answer: Callable[[], Awaitable[dict[TP, int]]]) -> Any:
        tp = TP("in.usage", 0)

        class FakeConsumer:
            _committed_offset: Mapping[TP, int] = {tp: 1}

            def assignment(self) -> set[TP]:
                return {tp}

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                return await answer()

            async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
                return dict.fromkeys(tps, 0)

        return FakeConsumer()

    async def test_failed_and_slow_samples_count_and_a_good_one_restores(self) -> None:
        registry = CollectorRegistry()
        health = Metrics(registry)
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], health=health, timeout=0.05)
        kafka = {"dependency": "kafka"}

        async def refused() -> dict[TP, int]:
            raise KafkaConnectionError("connection refused")

        async def hangs() -> dict[TP, int]:
            await asyncio.sleep(10)
            return {}

        async def answers() -> dict[TP, int]:
            return {TP("in.usage", 0): 4}

        await sampler.sample(self.consumer(refused))
        assert sample(registry, "moments_dependency_errors_total", **kafka) == 1
        assert sample(registry, "moments_dependency_up", **kafka) == 0
        await sampler.sample(self.consumer(hangs))
        assert sample(registry, "moments_dependency_errors_total", **kafka) == 2
        await sampler.sample(self.consumer(answers))
        assert sample(registry, "moments_dependency_up", **kafka) == 1
        assert sample(registry, "moments_dependency_errors_total", **kafka) == 2
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 3
        assert sample(registry, "moments_dependency_errors_total", dependency="redis") == 0

    async def test_a_worker_with_no_partition_still_notices_the_broker_gone(self) -> None:
        """More workers than partitions: one without any sampled nothing, and its
        dependency_up{kafka} stood at 1 through an outage (SRE review)."""
        registry = CollectorRegistry()
        health = Metrics(registry)
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], health=health, timeout=0.05)
        asked: list[tuple[TP, ...]] = []
        answer: list[BaseException | None] = [KafkaConnectionError("connection refused")]

        class IdleConsumer:
            _committed_offset: Mapping[TP, int] = {}

            def assignment(self) -> set[TP]:
                return set()

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                asked.append(tps)
                if answer[0] is not None:
                    raise answer[0]
                return dict.fromkeys(tps, 9)

        await sampler.sample(IdleConsumer())
        assert sample(registry, "moments_dependency_up", dependency="kafka") == 0
        answer[0] = None
        await sampler.sample(IdleConsumer())
        assert sample(registry, "moments_dependency_up", dependency="kafka") == 1
        assert asked == [(TP("in.usage", 0),)] * 2
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") is None
        assert sample(registry, "moments_consumer_assigned_partitions") == 0

    async def test_the_lag_is_unknown_while_the_broker_does_not_answer(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """It stood at its last value: 0 through an outage while 3,000 events waited (SRE
        drill). And a timeout says so: its text is empty ("TimeoutError: ")."""
        registry = CollectorRegistry()
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], timeout=0.05)
        lag = {"topic": "in.usage", "partition": "0"}

        async def answers() -> dict[TP, int]:
            return {TP("in.usage", 0): 1}

        async def hangs() -> dict[TP, int]:
            await asyncio.sleep(10)
            return {}

        await sampler.sample(self.consumer(answers))
        assert sample(registry, "moments_consumer_lag", **lag) == 0
        with caplog.at_level(logging.WARNING, logger="moments.consumer_metrics"):
            await sampler.sample(self.consumer(hangs))
        assert math.isnan(sample(registry, "moments_consumer_lag", **lag) or 0.0)
        assert "kafka did not answer the lag sample (no answer within 0.05 s)" in caplog.text
        await sampler.sample(self.consumer(answers))
        assert sample(registry, "moments_consumer_lag", **lag) == 0

    async def test_a_failed_log_start_lookup_alone_leaves_kafka_up_and_reads_the_committed(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The end offsets came back but ListOffsets(earliest) failed: the whole sample
        counted as a Kafka failure, lag NaN and dependency_up{kafka} 0, with Kafka
        answering. The lag is now read from the committed offset, as before the start was
        asked, and the error counted (logged once per run of them)."""
        registry = CollectorRegistry()
        health = Metrics(registry)
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], health=health, timeout=1)
        tp = TP("in.usage", 0)
        kafka = {"dependency": "kafka"}
        lag = {"topic": "in.usage", "partition": "0"}
        starts: list[BaseException | int] = [KafkaConnectionError("connection reset")]

        class FakeConsumer:
            _committed_offset: Mapping[TP, int] = {tp: 40}

            def assignment(self) -> set[TP]:
                return {tp}

            async def highwaters(self, *tps: TP) -> dict[TP, int]:
                return {tp: 100}

            async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
                if isinstance(starts[0], BaseException):
                    raise starts[0]
                return {tp: starts[0]}

        with caplog.at_level(logging.WARNING, logger="moments.consumer_metrics"):
            await sampler.sample(FakeConsumer())
            await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_dependency_up", **kafka) == 1
        assert sample(registry, "moments_dependency_errors_total", **kafka) == 2
        assert sample(registry, "moments_consumer_lag", **lag) == 60
        assert caplog.text.count("did not answer the log start lookup") == 1
        assert "KafkaConnectionError: connection reset" in caplog.text
        assert "did not answer the lag sample" not in caplog.text
        starts[0] = 70  # answered again: read from the start where the commit is older
        await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_consumer_lag", **lag) == 30
        assert sample(registry, "moments_dependency_errors_total", **kafka) == 2

    async def test_a_hung_log_start_lookup_costs_only_the_start_offsets(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """ListOffsets(earliest) that never answers, the end offsets answered: the lookup
        shared the sample's one wait, so the whole sample timed out (every partition's lag
        NaN, dependency_up{kafka} 0). Now the lookup is given up on its own shorter wait:
        the lag is read from the committed offsets, the error counted, Kafka left up."""
        registry = CollectorRegistry()
        health = Metrics(registry)
        # 2 s: the start lookup is given up at 1.5 s, well before the sample on a busy host.
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], health=health, timeout=2)
        tps = [TP("in.usage", 0), TP("in.usage", 1)]
        kafka = {"dependency": "kafka"}

        class FakeConsumer:
            _committed_offset: Mapping[TP, int] = {tps[0]: 40, tps[1]: 90}

            def assignment(self) -> set[TP]:
                return set(tps)

            async def highwaters(self, *asked: TP) -> dict[TP, int]:
                return dict.fromkeys(asked, 100)

            async def earliest_offsets(self, *asked: TP) -> dict[TP, int]:
                await asyncio.Event().wait()  # never answers
                return {}

        with caplog.at_level(logging.WARNING, logger="moments.consumer_metrics"):
            await sampler.sample(FakeConsumer())
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 60
        assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="1") == 10
        assert sample(registry, "moments_dependency_up", **kafka) == 1
        assert sample(registry, "moments_dependency_errors_total", **kafka) == 1
        assert "log start lookup of the lag sample (no answer within 1.5 s)" in caplog.text
        assert "did not answer the lag sample" not in caplog.text

    async def test_a_hung_log_start_lookup_is_not_asked_again_while_it_runs(self) -> None:
        """Faust runs these lookups on its consumer thread, two at a time, beside the end
        lookups, the fetches and the commits: a start lookup whose wait was given up ran
        on there all the same, and each sample asked another. Two hung lookups took both
        workers; the third sample's end lookup waited behind them and the sample failed:
        every lag NaN, Kafka marked down while it answered. Modelled here: a consumer
        whose calls run on two workers that a caller's cancel does not stop."""
        registry = CollectorRegistry()
        health = Metrics(registry)
        sampler = LagSampler(ConsumerMetrics(registry), ["in.usage"], health=health, timeout=0.4)
        tp = TP("in.usage", 0)
        workers = asyncio.Semaphore(2)
        hung = asyncio.Event()
        started: list[tuple[TP, ...]] = []
        running: set[asyncio.Future[dict[TP, int]]] = set()

        class ThreadedConsumer:
            _committed_offset: Mapping[TP, int] = {tp: 40}

            def assignment(self) -> set[TP]:
                return {tp}

            @staticmethod
            async def on_thread(call: Callable[[], Awaitable[dict[TP, int]]]) -> dict[TP, int]:
                async def run() -> dict[TP, int]:
                    async with workers:
                        return await call()

                job = asyncio.ensure_future(run())
                running.add(job)
                return await asyncio.shield(job)  # a cancelled wait leaves it running

            async def highwaters(self, *asked: TP) -> dict[TP, int]:
                async def answer() -> dict[TP, int]:
                    return dict.fromkeys(asked, 100)

                return await self.on_thread(answer)

            async def earliest_offsets(self, *asked: TP) -> dict[TP, int]:
                started.append(asked)

                async def hang() -> dict[TP, int]:
                    await hung.wait()
                    return dict.fromkeys(asked, 70)

                return await self.on_thread(hang)

        consumer = ThreadedConsumer()
        try:
            for _ in range(3):
                await sampler.sample(consumer)
                assert sample(registry, "moments_dependency_up", dependency="kafka") == 1
                lag = sample(registry, "moments_consumer_lag", topic="in.usage", partition="0")
                assert lag == 60
            assert started == [(tp,)]
            hung.set()  # it answers at last: the next sample uses it, the one after asks again
            await sampler.sample(consumer)
            assert sample(registry, "moments_consumer_lag", topic="in.usage", partition="0") == 30
            await sampler.sample(consumer)
            assert started == [(tp,), (tp,)]
        finally:
            hung.set()
            await asyncio.gather(*running)


class TestCommitTiming:
    async def test_only_commits_that_commit_something_are_timed(self) -> None:
        registry = CollectorRegistry()
        metrics = ConsumerMetrics(registry)

        class FakeConsumer:
            async def _commit_offsets(self, offsets: Mapping[TP, int]) -> bool:
                return bool(offsets)

        consumer = FakeConsumer()
        time_commits(consumer, metrics)
        assert await consumer._commit_offsets({TP("t", 0): 5}) is True
        assert await consumer._commit_offsets({}) is False
        assert sample(registry, "moments_consumer_commit_seconds_count") == 1


class TestRebalanceSensor:
    def test_rebalances_are_counted_and_timed(self) -> None:
        registry = CollectorRegistry()
        sensor = RebalanceSensor(ConsumerMetrics(registry))
        state = sensor.on_rebalance_start(app=None)
        sensor.on_rebalance_end(app=None, state=state)
        sensor.on_rebalance_start(app=None)
        assert sample(registry, "moments_consumer_rebalances_total") == 2
        assert sample(registry, "moments_consumer_rebalance_seconds_count") == 1


def test_faust_checks_only_the_paths_of_its_own_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Faust's stream and commit checks read a Faust stream's bookkeeping, which the
    batch loop does not keep: through a Redis outage over five minutes they logged 367
    "Has not committed" ERROR lines with advice to raise Faust timeouts (SRE drill). The
    input topics get none of it (its fetch part cannot fire: the test below); other
    topics keep Faust's whole check."""
    from types import SimpleNamespace

    from faust.transport.drivers import aiokafka as faust_aiokafka

    from moments.consumer import BatchConsumerThread

    checked: list[tuple[str, str]] = []
    monkeypatch.setattr(
        faust_aiokafka.AIOKafkaConsumerThread,
        "verify_event_path",
        lambda self, now, tp: checked.append(("faust", tp.topic)),
    )
    thread = object.__new__(BatchConsumerThread)
    thread.consumer = SimpleNamespace(hot_topics=frozenset({"telecom.usage"}))  # type: ignore[assignment]

    def fetch_check(now: float, tp: TP) -> bool:
        checked.append(("fetch", tp.topic))
        return False

    thread._verify_aiokafka_event_path = fetch_check  # type: ignore[method-assign]
    thread.verify_event_path(1.0, TP("telecom.usage", 0))
    thread.verify_event_path(1.0, TP("moments.task-outcomes", 0))
    assert checked == [("faust", "moments.task-outcomes")]


def test_faust_fetch_check_cannot_see_a_fetch_ten_minutes_old() -> None:
    """Why the batch loop's partitions need no fetch check of Faust's: it compares the
    monotonic clock with aiokafka's wall-clock time of the last fetch (SRE drill). If a
    Faust or aiokafka upgrade makes it see a stalled fetch, this fails: reconsider
    `BatchConsumerThread.verify_event_path`."""
    import time
    from types import SimpleNamespace
    from unittest.mock import Mock

    from faust.transport.drivers import aiokafka as faust_aiokafka

    last_fetch_ms = int(1000 * time.time()) - 600_000  # as aiokafka's fetcher sets it
    assignment = SimpleNamespace(
        active=True, state_value=lambda tp: SimpleNamespace(timestamp=last_fetch_ms)
    )
    kafka = SimpleNamespace(
        _fetcher=SimpleNamespace(
            _subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        )
    )
    thread = object.__new__(faust_aiokafka.AIOKafkaConsumerThread)
    thread._ensure_consumer = lambda: kafka  # type: ignore[method-assign]
    thread.time_started = time.monotonic() - 3600
    thread.tp_fetch_request_timeout_secs = 300.0
    thread.log = Mock()
    assert thread._verify_aiokafka_event_path(time.monotonic(), TP("telecom.usage", 0)) is False
    thread.log.error.assert_not_called()
