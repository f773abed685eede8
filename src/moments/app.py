"""The Faust layer: an app factory, and the agents and tasks that wire topics to the runtime.

The input topics' agent only subscribes them (so Faust co-partitions them with the state
table): their records come whole fetches at a time from `moments.consumer` to the
`process_batches` task, which turns them into `RawRecord`s, hands each batch to
`Runtime.handle` and marks their offsets processed once its outputs are durable; those
are committed by `BatchConsumer.commit_processed`, not by Faust's acks. Task outcomes go
through a plain Faust agent, whose batch that fails is never committed and whose error
stops the worker as the batch loop's does (`moments.outcomebatches`). What is decided is
decided in the runtime and the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, cast

import faust
from faust.types import TP, StoreT

from moments.batchloop import COMMIT_EVERY_S, BatchLoop
from moments.codec import register_codecs
from moments.connections import faust_broker_credentials, kafka_client_kwargs
from moments.consumer import FETCH_MAX_WAIT_MS, BatchConsumer, BatchTransport
from moments.engine import Detector
from moments.gctune import FULL_COLLECTION_EVERY_S, PauseTimer, collect_frozen, tune_gc
from moments.health import Health
from moments.livefrom import parse_live_from
from moments.logformat import faust_logging_config
from moments.models import EventType
from moments.outcomebatches import OutcomeBatches
from moments.producer import leaves_group
from moments.records import Header, RawRecord
from moments.restore import PreloadingTable
from moments.rewind import RewindGuard, silent_seek_level
from moments.runtime import Runtime, RuntimeStoppedError
from moments.service_worker import ServiceWorker
from moments.settings import Settings
from moments.stateview import STATE_TABLE, returns_topic
from moments.store import FaustTableStore
from moments.topiclayout import topic_types
from rules.catalog import RuleSet
from sinks.metrics import Dependency, Metrics
from sinks.policy import DispatchPolicy, load_policy

log = logging.getLogger(__name__)

OUTCOME_BATCH = 500
SWEEP_EVERY_S = 5.0
"""How often partitions are checked for event time having moved into a new hour."""
RELEASE_EVERY_MAX_S = 10.0
"""Longest between two runs of the re-drive timer, which also releases the deferral queue
(quiet hours, merge windows, capacity) and counts expired unanswered tasks: it runs every
MOMENTS_PENDING_REDRIVE_SECONDS / 3 up to this, so a longer re-drive age (it re-drives
only publishes older than that) does not hold back tasks due now."""
SILENT_AFTER_S = 2.0
"""How long after a rebalance a silent input partition is sought back (see moments.rewind)."""
SILENT_PROBE_TIMEOUT_S = 10.0
"""The silent-partition check asks the broker for offsets; unbounded, a broker gone at
that moment held the timer for aiokafka's 90 s and then crashed the worker."""


def batch_topics(settings: Settings) -> list[str]:
    """The topics the batch loop reads: the input topics and the internal topic of
    cooldown returns (moments.cooldowns), all co-partitioned with the state table."""
    return [*topic_types(settings), returns_topic(settings)]


class MomentsApp(faust.App):
    """Faust's app with the batch consumer (see moments.consumer)."""

    hot_topics: frozenset[str] = frozenset()
    marker_topics: frozenset[str] = frozenset()
    """Topics whose commits go past a transaction's markers (`BatchConsumer`)."""
    fetch_wait_ms: int = FETCH_MAX_WAIT_MS
    state_settled: Callable[[], Awaitable[None]] | None = None
    leave_group: Callable[[], bool] | None = None
    """Set by `build`: whether the consumer sends LeaveGroup when it stops
    (`moments.producer.leaves_group`)."""
    corrupt_read: Callable[[], None] | None = None
    """Set by `register_agents`: counts a read that failed aiokafka's check of a fetched
    batch (`BatchConsumer.corrupt_read`) in `moments_dependency_errors_total`."""
    """Set by `register_agents` (`Runtime.settled`): what a revocation waits for besides
    the batch in flight (a window sweep's chunk)."""
    stop_grace_s: float | None = None
    """How long a stop asked by SIGTERM or SIGINT may take before the process ends
    (moments.stopdeadline, started by `ServiceWorker`); None: no deadline."""
    health: Health | None = None
    """Beaten once a second from the app's start (`on_start`), set by `register_agents`."""

    async def on_start(self) -> None:
        """Faust's start, then the health beat: from here, not as a timer, which Faust
        starts only once the first table recovery is over. Until then nothing beat: the
        group join (55-60 s on Tansu), the bulk restore and Faust's recovery, and a broker
        gone again meanwhile, all counted as a stalled loop, /livez failed, and Kubernetes
        restarted a worker that was restoring its state or waiting for its broker."""
        await super().on_start()
        if self.health is not None:
            self.add_future(beat_every_second(self.health))

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)

    def _new_consumer(self) -> BatchConsumer:
        consumer = cast(BatchConsumer, super()._new_consumer())
        consumer.hot_topics = self.hot_topics
        consumer.marker_topics = self.marker_topics
        consumer.fetch_wait_ms = self.fetch_wait_ms
        if self.state_settled is not None:
            consumer.state_settled = self.state_settled
        if self.corrupt_read is not None:
            consumer.corrupt_read_seen = self.corrupt_read
        if self.leave_group is not None:
            consumer.leave_group = self.leave_group
        return consumer


async def beat_every_second(health: Health) -> None:
    """Beat `health` once a second until cancelled: the app's beat from its start, and the
    worker's while it waits before Faust runs (`moments.worker.beating`)."""
    while True:
        health.beat()
        await asyncio.sleep(1.0)


def create_app(settings: Settings) -> MomentsApp:
    register_codecs()
    store = "memory://" if settings.store == "memory" else "rocksdb://"
    app = MomentsApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=faust_broker_credentials(settings),
        store=store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=min(settings.rebalance_timeout, 60.0),
        broker_heartbeat_interval=min(3.0, settings.rebalance_timeout / 4),
        key_serializer="raw",
        value_serializer="orjson",
        web_enabled=False,
        autodiscover=False,
        producer_acks=-1,
        table_standby_replicas=settings.standby_copies,
        Worker=ServiceWorker,  # no terminal spinner: it put the root logger at DEBUG
        logging_config=faust_logging_config(settings.log_format),
    )
    app.fetch_wait_ms = settings.fetch_wait_ms
    app.stop_grace_s = settings.stop_grace_seconds
    return app


def rocksdb_bounds(settings: Settings) -> Callable[[StoreT[bytes, bytes]], None] | None:
    """What opens the RocksDB store's databases within the settings' memory bounds (one
    block cache for the worker's partitions); None with the memory store, which needs
    no RocksDB bindings."""
    if settings.store != "rocksdb":
        return None
    from moments.rocksdb_memory import RocksDBMemory, bound

    return functools.partial(bound, memory=RocksDBMemory.from_settings(settings))


def register_agents(
    app: MomentsApp, settings: Settings, runtime: Runtime, health: Health | None = None
) -> Any:
    """Declare the state table, the detector agent and the re-drive timer on `app`; beat
    `health` and tell it when the worker is ready."""
    table: Any = app.tables.add(
        PreloadingTable(
            app,
            name=STATE_TABLE,
            default=None,
            beacon=app.tables.beacon,
            # Faust picks the changelog serializers from these types (bytes: raw), not
            # from a schema: with a schema alone a restore decoded the records as JSON.
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            help="One compact record per subscriber (moments.state.SubscriberState)",
            prepare_store=rocksdb_bounds(settings),
        )
    )
    table.client = (settings.bootstrap_servers, kafka_client_kwargs(settings))  # bulk restores
    # A memory store drops standby records when a recovery ends: read them only for RocksDB.
    table.preload_standbys = settings.store == "rocksdb"
    stale = runtime.metrics.stale_state_records
    for partition in range(settings.partitions):  # from 0, so increase() sees the first
        stale.labels(str(partition))
    table.on_stale = lambda partition, count: stale.labels(str(partition)).inc(count)
    if settings.store == "memory":  # counting RocksDB's records would read every one

        async def count_records() -> None:
            # After each rebalance: what memory holds (the records of given-up partitions
            # forgotten), the figure to size a worker's memory by.
            log.info("state table holds %d record(s) after the rebalance", len(table.data))

        table.on_recover(count_records)
    store = FaustTableStore(
        table, source_topic=settings.topic(EventType.ROAMING.value), partitions=settings.partitions
    )
    app.hot_topics = frozenset(batch_topics(settings))
    # The outcomes too: read by Faust's own stream, whose commits stop at a marker as well.
    app.marker_topics = app.hot_topics | {settings.topic("task_outcomes")}
    app.state_settled = runtime.settled
    app.corrupt_read = runtime.metrics.dependency_errors.labels(Dependency.KAFKA.value).inc
    source = app.topic(
        *batch_topics(settings),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    # concurrency=1: with more, Faust can commit past an event still in flight (faust#606).
    guard = RewindGuard()
    inputs = set(batch_topics(settings))
    watch = {"generation": -1, "since": 0.0, "swept": True}

    earliest: dict[tuple[str, int], int] = {}

    def committed(tp: tuple[str, int]) -> int | None:
        # Faust's own view, refreshed when recovery seeks to the committed offsets.
        offsets = getattr(app.consumer, "_committed_offset", {})
        found: int | None = offsets.get(TP(*tp))
        return found

    had_state: set[int] = set()

    def committed_or_start(tp: tuple[str, int]) -> int | None:
        """Where a silent partition's reading must start: its committed offset; with none,
        if the state's changelog has records for the partition (a worker processed it and
        was killed before its first commit), the start of the log. A new group reading a
        backlog has neither, and its partitions are only slow, not silent."""
        found = committed(tp)
        if found is None and tp[1] in had_state:
            return earliest.get(tp)
        return found

    def follow_generation() -> None:
        if app.consumer_generation_id != watch["generation"]:
            watch.update(generation=app.consumer_generation_id, since=time.monotonic(), swept=False)
            guard.reset()

    returns = returns_topic(settings)

    async def seek_one(tp: tuple[str, int], offset: int) -> None:
        await app.consumer.seek(TP(*tp), offset)

    def seek_failed(tp: tuple[str, int], offset: int, exc: Exception, retry_in: float) -> None:
        runtime.metrics.dependency_errors.labels(Dependency.KAFKA.value).inc()
        log.warning(
            "%s[%d]: the seek back to offset=%d failed (%s: %s); its records are held until "
            "it is made, tried again in %g s (a rebalance under way ends it; "
            "if this lasts, check the broker and MOMENTS_KAFKA_BOOTSTRAP)",
            tp[0],
            tp[1],
            offset,
            type(exc).__name__,
            exc,
            retry_in,
        )

    async def seek_back(
        seeks: Mapping[tuple[str, int], int],
        why: str,
        ends: Mapping[TP, int] | None = None,
    ) -> list[tuple[str, int]]:
        """Seek partitions back, saying why; returns those sought. One that fails stays
        held, counted in moments_dependency_errors_total{dependency="kafka"}, and is sought
        again after a back-off (`retry_failed_seeks`)."""
        for (topic, partition), offset in seeks.items():
            # Cooldown returns are rare: their partitions are silent after nearly every
            # rebalance, and a warning for each was noise (re-check review); so is an
            # input partition with nothing to read (`ends`: the partitions' end offsets).
            if topic == returns:
                level = logging.INFO
            elif ends is None:
                level = logging.WARNING
            else:
                level = silent_seek_level(offset, ends.get(TP(topic, partition)))
            log.log(
                level, "%s[%d]: %s; reading again from offset=%d", topic, partition, why, offset
            )
        # Each said made as it is: its records held since the seek was asked are from before
        # it, what the consumer hands over of it now is the re-read (the silent check's seeks
        # are made one at a time, beside the batch loop).
        return await guard.seek(seeks, seek_one, seek_failed)

    # The agent only subscribes the input topics (and lets Faust's assignor co-partition
    # them with the table); their records reach `process_batches` through the
    # consumer, whole fetches at a time.
    @app.agent(source, name=f"{settings.app_id}.detect")
    async def detect(stream: Any) -> None:
        async for _ in stream:  # pragma: no cover - the batch consumer delivers nothing here
            log.error("an input record reached the Faust stream; it is handled by the batch loop")

    outcomes_topic = app.topic(
        settings.topic("task_outcomes"),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def handle_outcomes(records: Sequence[RawRecord]) -> None:
        await runtime.ready.wait()
        await runtime.handle_outcomes(records)

    def hold(offsets: Mapping[TP, int]) -> None:
        cast(BatchConsumer, app.consumer).hold(offsets)

    # A batch that fails is never committed, and an error stops the worker, as the batch
    # loop's does: `take_events` acknowledges a batch however it leaves, and the crash of
    # an agent alone was restarted by Faust's supervisor (moments.outcomebatches).
    outcome_batches = OutcomeBatches(handle_outcomes, hold, app.crash)

    # Outcomes are few: Faust's own batching is enough, and its ack follows the handling.
    @app.agent(outcomes_topic, name=f"{settings.app_id}.outcomes")
    async def outcomes(stream: Any) -> None:
        # Returns when a batch failed (the worker is stopping: its next start reads the
        # batch again); every error, in the batch or in taking it, went the same way.
        await outcome_batches.consume(
            stream.take_events(OUTCOME_BATCH, within=1.0), outcome_record, outcome_position
        )

    @app.task  # type: ignore[untyped-decorator]
    async def process_batches() -> None:
        await runtime.ready.wait()

        async def seek(seeks: Mapping[tuple[str, int], int]) -> list[tuple[str, int]]:
            return await seek_back(
                seeks, "the first record after the rebalance skips past the commit"
            )

        loop = BatchLoop(
            cast(BatchConsumer, app.consumer),
            lambda records, owned: runtime.handle(records, store, owned),
            guard,
            committed,
            seek,
            settings.batch_size,
            on_fetch=follow_generation,
            ownership=ownership,
        )
        await loop.run()

    @app.timer(interval=COMMIT_EVERY_S)  # type: ignore[untyped-decorator]
    async def commit_durable() -> None:
        """Commit what the batch loop made durable, also when no batch follows it (a worker
        killed a while after its last batch then resumes from there)."""
        consumer = cast(BatchConsumer, app.consumer)
        if runtime.ready.is_set() and consumer.idle.is_set():
            await consumer.commit_processed()

    pauses = PauseTimer()  # installed once start-up is done, reported every second

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def start_runtime() -> None:
        await runtime.start()
        tune_gc(freeze_old=True)  # start-up objects and later long-lived ones never walked
        pauses.install()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_on_signal)
        log.info("state table holds %d subscriber(s) after recovery", len(table.data))
        redriven = await runtime.redrive()
        if redriven:
            log.warning("re-drove %d pending task(s) left by an earlier run", redriven)

    if health is not None:
        health.ready_when(lambda: not_ready(app, runtime))
        app.health = health  # beaten from the app's start (`MomentsApp.on_start`)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def report_gc_pauses() -> None:
        for generation, seconds in pauses.drain():
            runtime.metrics.gc_pause.labels(str(generation)).observe(seconds)

    @app.timer(interval=FULL_COLLECTION_EVERY_S)  # type: ignore[untyped-decorator]
    async def collect_frozen_cycles() -> None:
        """Reference cycles among frozen objects (see moments.gctune), found once an hour:
        one pause of a full collection, instead of one whenever the old generation grew."""
        started = time.perf_counter()
        found = collect_frozen()
        log.info(
            "full garbage collection: %d unreachable object(s) in %.0f ms",
            found,
            (time.perf_counter() - started) * 1000,
        )

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def sweep_silent_partitions() -> None:
        """A partition still silent a while after a rebalance may have lost its first records."""
        follow_generation()
        if getattr(app, "rebalancing", False):
            watch["since"] = time.monotonic()
        elif not watch["swept"] and time.monotonic() - watch["since"] >= SILENT_AFTER_S:
            watch["swept"] = True
            consumer = cast(BatchConsumer, app.consumer)
            # A partition whose records wait in the queue is busy, not silent.
            assigned = [
                (tp.topic, tp.partition)
                for tp in app.consumer.assignment()
                if tp.topic in inputs and not consumer.holds(tp)
            ]
            changelog = {TP(store.changelog_topic, p) for _, p in assigned}
            try:
                starts, highs, ends = await asyncio.wait_for(
                    offsets_of(assigned, changelog), SILENT_PROBE_TIMEOUT_S
                )
            except Exception as exc:  # the broker gone: try again next tick, not crash
                watch["swept"] = False
                log.warning(
                    "kafka did not answer the silent-partition check (%s: %s); trying "
                    "again; if this lasts, check the broker and MOMENTS_KAFKA_BOOTSTRAP",
                    type(exc).__name__,
                    exc,
                )
                return
            earliest.update({(tp.topic, tp.partition): offset for tp, offset in starts.items()})
            had_state.clear()
            had_state.update(tp.partition for tp, high in highs.items() if high and high > 0)
            seeks = guard.silent(assigned, committed_or_start)
            await seek_back(seeks, "nothing arrived since the rebalance", ends)

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def retry_failed_seeks() -> None:
        """Seek again the partitions whose seek back failed, once their back-off is over
        (`RewindGuard.due`); not during a rebalance, whose assignment resets them."""
        follow_generation()
        if getattr(app, "rebalancing", False):
            return
        due = guard.due()
        if due:
            await seek_back(due, "seeking again after a failed seek")

    async def offsets_of(
        assigned: list[tuple[str, int]], changelog: set[TP]
    ) -> tuple[Mapping[TP, int], Mapping[TP, int], Mapping[TP, int]]:
        """The assigned partitions' first and end offsets, the changelog's end offsets."""
        partitions = [TP(*tp) for tp in assigned]
        starts = await app.consumer.earliest_offsets(*partitions)
        ends = await app.consumer.highwaters(*partitions)
        return starts, await app.consumer.highwaters(*changelog), ends

    def assigned_partitions() -> list[int]:
        return sorted({tp.partition for tp in app.consumer.assignment() if tp.topic in inputs})

    def ownership(partitions: Collection[int]) -> Callable[[], bool]:
        return group_ownership(app, assigned_partitions, partitions)

    @app.timer(interval=SWEEP_EVERY_S)  # type: ignore[untyped-decorator]
    async def close_windows() -> None:
        """Close finished windows of silent subscribers as event time moves on."""
        if runtime.ready.is_set() and not getattr(app, "rebalancing", False):
            partitions = assigned_partitions()
            runtime.forget(partitions)
            try:
                await runtime.sweep(store, partitions, ownership(partitions))
            except RuntimeStoppedError:  # shutting down mid-sweep: the next owner sweeps again
                log.info("window sweep stopped: the worker is shutting down")

    if settings.rules_reload_seconds > 0:

        @app.timer(interval=settings.rules_reload_seconds)  # type: ignore[untyped-decorator]
        async def reload_rules() -> None:
            """A changed rules or dispatch policy file (or SIGHUP) is swapped in between
            batches."""
            await runtime.reloader.check_off_loop()
            await runtime.policy_reloader.check_off_loop()

    release_every = min(RELEASE_EVERY_MAX_S, max(1.0, settings.pending_redrive_seconds / 3))

    @app.timer(interval=release_every)  # type: ignore[untyped-decorator]
    async def redrive_pending() -> None:
        if runtime.ready.is_set():
            await runtime.redrive()

    reloading: set[asyncio.Task[None]] = set()  # held until done (asyncio keeps weak refs)

    async def reload_in_turn() -> None:
        # The rules first: a policy read at once was judged against the rules it replaced
        # (a rule renamed in both was refused in the policy).
        await runtime.reloader.check_off_loop()
        await runtime.policy_reloader.check_off_loop()

    def reload_on_signal() -> None:
        log.info("SIGHUP: reloading the rules and the dispatch policy")
        runtime.reloader.request()
        runtime.policy_reloader.request()
        task = asyncio.get_running_loop().create_task(reload_in_turn())
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    async def stop_runtime(*_: Any, **__: Any) -> None:
        await runtime.stop()

    app.on_before_shutdown.connect(stop_runtime)
    return detect


def outcome_record(event: Any) -> RawRecord:
    """A Faust event of the outcomes topic as the record `handle_outcomes` reads."""
    message = event.message
    return RawRecord(
        message.topic,
        message.partition,
        message.offset,
        event.key,
        event.value,
        _timestamp_ms(message.timestamp),
        _headers(message.headers),
    )


def outcome_position(event: Any) -> tuple[str, int, int]:
    """Where a Faust event of the outcomes topic was read: topic, partition, offset."""
    message = event.message
    return (message.topic, message.partition, message.offset)


def _timestamp_ms(seconds: float | None) -> int | None:
    """A Faust message's timestamp (seconds) as Kafka's milliseconds."""
    return round(seconds * 1000) if seconds is not None else None


def _headers(headers: Any) -> tuple[Header, ...]:
    """A Faust message's headers, a list of pairs or a mapping, as pairs."""
    if not headers:
        return ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), v) for k, v in pairs)


def group_ownership(
    app: Any, assigned: Callable[[], Collection[int]], partitions: Collection[int]
) -> Callable[[], bool]:
    """What a batch or a window sweep asks before writing the state of `partitions`
    (`BatchLoop.ownership`, `Runtime.sweep`): no rebalance began since it was called, and
    they are still held in the same consumer generation.

    A rebalance is told by Faust's count of them, not by its `rebalancing` flag: the flag
    stays up a little after the flow resumes (`_resume_streams` awaits the fetcher's start
    before `on_rebalance_end` on the first rebalance), and a batch begun then would never
    have been ours: its offsets not marked, and the batches after it committing past its
    events."""
    generation, began = app.consumer_generation_id, app.rebalancing_count

    return GroupHold(app, assigned, partitions, generation, began)


class GroupHold:
    """`group_ownership`'s check: true while the partitions are still held as they were
    when it was made. `generation` is the consumer generation they are held in, which
    stamps the state records written under it (moments.fence)."""

    __slots__ = ("_app", "_assigned", "_began", "_partitions", "generation")

    def __init__(
        self,
        app: Any,
        assigned: Callable[[], Collection[int]],
        partitions: Collection[int],
        generation: int,
        began: int,
    ) -> None:
        self._app = app
        self._assigned = assigned
        self._partitions = partitions
        self.generation = generation
        self._began = began

    def __call__(self) -> bool:
        app = self._app
        # The generation too: a rebalance that took a partition away and gave it back
        # meanwhile (restored from the changelog) leaves it held again.
        if app.rebalancing_count != self._began or app.consumer_generation_id != self.generation:
            return False
        held = self._assigned()
        return all(p in held for p in self._partitions)


def not_ready(app: MomentsApp, runtime: Runtime) -> str | None:
    """Why this worker cannot take its share of the events now, or None (/readyz). Read
    from the metrics thread: flags only."""
    if not runtime.ready.is_set():
        return f"{runtime.starting}; moments_dependency_up and the log say why it waits"
    if app.rebalancing_count == 0:  # the generation id cannot tell: Tansu's first is 0
        return "joining the consumer group"
    if getattr(app, "rebalancing", False):
        return "the consumer group is rebalancing"
    if getattr(app, "in_recovery", False):
        return "restoring its state from the changelog"
    return None


def live_from_of(settings: Settings, policy: DispatchPolicy) -> dt.datetime | None:
    """`MOMENTS_LIVE_FROM` as an instant: a date is midnight in the dispatch policy's time
    zone, as the backtest's dates are."""
    if settings.live_from is None:
        return None
    return parse_live_from(settings.live_from, policy.zone)


def build(
    settings: Settings,
    rules: RuleSet,
    metrics: Metrics,
    health: Health | None = None,
    policy: DispatchPolicy | None = None,
) -> tuple[MomentsApp, Runtime]:
    """A ready-to-run app and its runtime, from settings, loaded rules and the dispatch
    policy (read from `settings` when not given)."""
    app = create_app(settings)
    lateness = dt.timedelta(seconds=settings.lateness_seconds)
    if policy is None:
        policy = load_policy(settings.dispatch_policy)
    live_from = live_from_of(settings, policy)
    detector = Detector(
        rules, topic_types(settings), lateness, returns_topic(settings), live_from=live_from
    )
    runtime = Runtime(settings, metrics, detector, policy)
    app.leave_group = lambda: leaves_group(settings.leave_group_on_stop, runtime.idempotent)
    register_agents(app, settings, runtime, health)
    return app, runtime
