"""The worker's resources (producer, Redis, sinks) and the per-batch handling.

Order inside a batch is what makes at-least-once in, deduplicated out:
dead letters and tasks are acknowledged by the broker (and tasks confirmed in
the ledger) *before* the subscriber state is written (its changelog acknowledged,
then the local store), and the source offsets are committed after both. A crash
anywhere re-reads the batch: a re-detected moment has the same task id and the
ledger stops it; an event already in the state is skipped by its offset. The
cooldowns of the tasks dispatch dropped are given back in the state before it is
written; after a crash the ledger still says which tasks were dropped, so the state
written then is the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from moments.batchresult import (
    SHADOW_REASONS,
    BatchResult,
    give_back_cooldowns,
    made_after,
    mend_unwritable,
    take_over_cooldowns,
)
from moments.connections import kafka_client_kwargs, probe_redis, redis_client
from moments.decoding import TOMBSTONE
from moments.engine import Detector
from moments.enums import WithdrawReason
from moments.eventclock import EventClock
from moments.exceptions import ConfigError
from moments.livefrom import warming_up
from moments.logthrottle import RepeatThrottle
from moments.models import Channel, EventType, OutcomeStatus
from moments.outcomes import handle_outcomes
from moments.partitioning import PartitionCheck
from moments.pii import mask_msisdn
from moments.producer import is_idempotent, start_producer
from moments.records import DeadLetter, RawRecord, SuppressReason
from moments.redisurl import redacted_url
from moments.refusals import allowed_ahead
from moments.reload import PolicyReloader, Reloader
from moments.settings import Settings
from moments.shutdown import within
from moments.statedamage import report_damaged
from moments.stateview import changelog_topic, returns_topic
from moments.store import StateStore
from moments.sweep import sweep
from moments.topiclayout import OUTPUT_TOPICS
from moments.topics import ensure_topics
from rules.catalog import RuleSet
from rules.changes import compare_rules
from sinks.base import produce_to_partitions
from sinks.cooldowns import KafkaCooldownReturns
from sinks.deadletter import DeadLetterSink
from sinks.dispatch import TaskSink
from sinks.ledger import TaskLedger
from sinks.metrics import Dependency, DispatchMetrics, Metrics, Stage, drop_series
from sinks.policy import DispatchPolicy, OverflowPolicy, check_rule_ids, load_policy
from sinks.retry import with_retry
from sinks.stores import redis_stores
from sinks.withdrawals import profile_changes

SWEEP_CHUNK = 500
"""Subscribers swept per hold of the state lock (a batch waits at most one chunk)."""

LAST_FLUSH_S = 10.0
"""How long shutdown waits for the broker to take the records still in flight. Without
a bound, a broker that is gone holds the stop for the producer's request timeout (40 s)
on top of the last commits, past Kubernetes' 60 s grace period."""

log = logging.getLogger(__name__)
failures_log = logging.getLogger("moments.detector_errors")
failures_log.addFilter(RepeatThrottle())


def log_failures(failures: Sequence[Exception]) -> None:
    """A batch's failures to apply an event or sweep a record, with the first one's
    traceback: once per 30 s (RepeatThrottle), as a rule's fault fails every event it
    sees; the events are dead letters `detector_error`, counted in the metrics."""
    first = failures[0]
    failures_log.error(
        "applying an event or sweeping a record failed (%d in this batch; the events are "
        "dead letters 'detector_error', a swept record is tried again): a fault of the "
        "detector or its rules; report this traceback",
        len(failures),
        exc_info=(type(first), first, first.__traceback__),
    )


class RuntimeStoppedError(RuntimeError):
    """The runtime was stopped (shutdown) under work still in flight, such as a window
    sweep retrying its changelog write while the broker is gone. That work is redone:
    its offsets were not committed, and a window is closed at most once a local day (its
    record holds the day it was checked), so the redo closes what the stop left open."""


class Runtime:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        detector: Detector,
        policy: DispatchPolicy | None = None,
        now: float | None = None,
    ) -> None:
        """`now`: the wall clock at start (epoch seconds; None: `time.time()`), which says
        whether a worker started before MOMENTS_LIVE_FROM or after it (a restart)."""
        self.settings = settings
        self.policy = load_policy(settings.dispatch_policy) if policy is None else policy
        """Read before any connection is tried: a bad file stops the start at once."""
        self.metrics = metrics
        self.detector = detector
        self.ready = asyncio.Event()
        self.starting = "starting"
        """What `start` waits for now (for /readyz)."""
        self.judged_counts: dict[str, int] = {}
        """The tasks and withdrawals topics' partition counts the worker's start read and
        said with the fix where they are not MOMENTS_PARTITIONS
        (`moments.worker.check_partition_layout`): the creation of the output topics does
        not say them again; a count it finds other than these (the topic made again since,
        or made by another client after the start found it missing) it still says."""
        self._producer: AIOKafkaProducer | None = None
        self.idempotent: bool | None = None
        """Whether the dispatch producer got a producer id (None: not started yet)."""
        self._redis: Redis | None = None
        self.tasks: TaskSink | None = None
        self.dead_letters: DeadLetterSink | None = None
        self.clock = EventClock(settings.lateness_seconds, settings.idle_after_seconds)
        self.placement = PartitionCheck(settings.partitions)
        self._unknown_channels = UnknownChannels()
        self.reloader = Reloader(
            settings.rules,
            self.install_rules,
            self._record_reload,
            current=lambda: self.detector.rules,
        )
        self.policy_reloader = PolicyReloader(
            settings.dispatch_policy,
            self.install_policy,
            self._record_policy_reload,
            load=self._load_policy,
            current=lambda: self.policy,
        )
        # The batch loop and the window sweep both read and write subscriber state.
        self._state_lock = asyncio.Lock()
        self._counted: set[int] = set()
        """Partitions the state gauges report."""
        live_from = detector.live_from
        self._warming = live_from is not None
        """Until a batch's events reach MOMENTS_LIVE_FROM: said once when they do."""
        self._all_shadow = warming_up(live_from, time.time() if now is None else now)
        """Every rule's shadow series are declared (`_declare_series`) and kept at a reload:
        until a batch's events reach the instant, and only when the worker started before
        it. One started after it (a restart) is live: its rules in `mode: shadow` alone
        are shadow ones, and a late warm-up moment's series is born at 1."""
        metrics.live_from.set(live_from.timestamp() if live_from is not None else 0)
        if live_from is not None:
            log.info(
                "MOMENTS_LIVE_FROM %s: moments dated before it make no task (every rule "
                "counted as a shadow rule, moments_shadow_moments_total); from it on, live",
                live_from.isoformat(),
            )

    def _load_policy(self, path: Path | None) -> DispatchPolicy:
        """A reloaded policy, refused (`ConfigError`) as at start when its `overflow:` or
        `relevance:` names no rule of the rules in force (`check_rule_ids`)."""
        policy = load_policy(path)
        _check_names(path, policy, lambda: self.detector.rules)
        return policy

    def install_rules(self, rules: RuleSet) -> None:
        """Swap the rules in; called from the event loop, so never inside a batch."""
        changes = compare_rules(self.detector.rules, rules)
        log.info("rules change: %s", changes.describe())
        policy = self.policy_reloader
        # The policy file as last read was refused: read it again with these rules. It may
        # name one of them, its file seen before theirs (a rule renamed in both, two
        # ConfigMaps): refused then, it was never read again and the old one stayed.
        pending = policy.last != policy.installed
        if pending:
            policy.request()
        try:
            _check_names(self.settings.dispatch_policy, self.policy, lambda: rules)
        except ConfigError as exc:  # the rules are fine; the policy no longer fits them
            log.warning(
                "the dispatch policy names what the reloaded rules do not hold (a worker "
                "started so would stop; fix the policy%s): %s",
                ", refused before: it is read again with these rules" if pending else "",
                exc,
            )
        if changes.same_version:
            log.warning(
                "rule(s) %s changed but kept their version: their tasks before and after "
                "carry the same version; raise `version:` with each change",
                ", ".join(changes.same_version),
            )
        if changes.removed:
            kept = {r.task.moment_type for r in rules.rules}
            gone = {r.id: r.task.moment_type for r in self.detector.rules.rules}
            types = sorted({gone[i] for i in changes.removed if gone.get(i) not in kept})
            log.warning(
                "rule(s) %s removed: their tasks already made still go out, those waiting in "
                "the deferral queue when due%s",
                ", ".join(changes.removed),
                f" (moments tasks deferred --moment-type {' --moment-type '.join(types)} "
                "lists them)"
                if types
                else "",
            )
        self.detector.swap_rules(rules)
        self._drop_series(rules)
        self._declare_series(rules)
        self._report_rules(rules)

    def install_policy(self, policy: DispatchPolicy) -> None:
        """Swap the dispatch policy in; called from the event loop."""
        self.policy = policy
        if self.tasks is not None:
            self.tasks.use_policy(policy)

    def _record_policy_reload(self, result: str, _: int | None) -> None:
        self.metrics.policy_refused.set(1 if result == "error" else 0)

    def _report_rules(self, rules: RuleSet) -> None:
        """`moments_rule_info`: the rules in force now, and only those."""
        info = self.metrics.rule_info
        info.clear()
        for rule in rules.rules:
            info.labels(rule.id, str(rule.version), "shadow" if rule.shadow else "live").set(1)

    def _drop_series(self, rules: RuleSet) -> None:
        """Series of a moment type no rule in force makes, and shadow series of a rule no
        longer in shadow (nor warming up: once a batch's events reached
        `MOMENTS_LIVE_FROM`, or started after it, `_all_shadow`), are removed at a reload,
        as a restart would: left, they stood still on `/metrics` and on the dashboards. A
        late warm-up moment read after (dated before the instant) counts on a series born
        again at 1. A task
        of a removed type still in flight (an outcome, a withdrawal, a release) counts on
        a series born again at 1, which `rate()` reads as a counter reset."""
        dispatch = DispatchMetrics.of(self.metrics)
        m = self.metrics
        types = {r.task.moment_type for r in rules.rules}
        kinds = {(r.task.family.value, r.task.moment_type) for r in rules.rules}
        shadows = {r.id for r in rules.rules if r.shadow or self._all_shadow}
        for counter in (
            m.outcomes, m.withdrawn, m.unanswered_expired, m.published, m.suppressed,
            dispatch.merged, dispatch.overflow,
        ):  # fmt: skip
            drop_series(counter, lambda labels: labels["moment_type"] in types)
        drop_series(m.detected, lambda labels: (labels["family"], labels["moment_type"]) in kinds)
        drop_series(m.shadow, lambda labels: labels["rule_id"] in shadows)

    def _declare_series(self, rules: RuleSet) -> None:
        """Outcome, withdrawal, detection and publish series start at 0 for every moment
        type (and a shadow rule's would-be tasks, and its judgements deferred or suppressed for each
        reason of `SHADOW_REASONS`, at 0), so the first is a rise that `rate()` and
        `increase()` see, not a series appearing at 1. With MOMENTS_LIVE_FROM set every
        rule is a shadow rule for the moments before it, so every rule's are declared
        until the worker's events reach it, by a worker started before it (`_all_shadow`).
        So are suppressions for each `SuppressReason`, merges and overflows."""
        dispatch = DispatchMetrics.of(self.metrics)
        for moment_type in {r.task.moment_type for r in rules.rules}:
            for status in OutcomeStatus:
                self.metrics.outcomes.labels(moment_type, status.value)
            for why in WithdrawReason:  # a first withdrawal is a rise, not a new series
                self.metrics.withdrawn.labels(moment_type, why.value)
            for channel in Channel:  # a fallback or an overflow may send it on any
                self.metrics.unanswered_expired.labels(channel.value, moment_type)
                # MomentsTasksExpireUnanswered's denominator
                self.metrics.published.labels(moment_type, channel.value)
            for suppressed in SuppressReason:  # "Suppressed by reason" from 0, not "No data"
                self.metrics.suppressed.labels(moment_type, suppressed.value)
            dispatch.merged.labels(moment_type)
            for overflow in OverflowPolicy:
                dispatch.overflow.labels(moment_type, overflow.value)
        # MomentsNothingDetectedWhileEventsFlow: a night's rare moments, each the first of
        # its type since the start, read as none detected.
        for family, moment_type in {(r.task.family.value, r.task.moment_type) for r in rules.rules}:
            self.metrics.detected.labels(family, moment_type)
        for rule in rules.rules:
            if rule.shadow or self._all_shadow:
                self.metrics.shadow.labels(rule.id, "task", "")
                for outcome, reasons in SHADOW_REASONS.items():
                    for reason in reasons:
                        self.metrics.shadow.labels(rule.id, outcome, reason)

    def _record_reload(self, result: str, count: int | None) -> None:
        self.metrics.rules_reload.labels(result).inc()
        self.metrics.rules_refused.set(1 if result == "error" else 0)
        if count is not None:
            self.metrics.rules_loaded.set(count)

    async def start(self) -> None:
        s = self.settings
        self.starting = f"starting the producer (Kafka {s.kafka_bootstrap})"
        producer = await with_retry(
            lambda: start_producer(s), Dependency.KAFKA, self.metrics, "starting the producer"
        )
        self._producer = producer
        self.idempotent = is_idempotent(producer)
        outputs = {s.topic(n): s.partitions for n in OUTPUT_TOPICS}
        self.starting = f"creating the output topics (Kafka {s.kafka_bootstrap})"
        await create_topics(
            s, outputs, self.metrics, "creating output topics", judged=self.judged_counts
        )
        redis = redis_client(s)
        self.starting = f"connecting to Redis ({redacted_url(s.redis_url)})"
        # A Redis in cluster mode is waited out like one away (the preflight, which stops
        # the worker on it, may not have reached Redis): the log line names the fix.
        await with_retry(
            lambda: probe_redis(redis, s), Dependency.REDIS, self.metrics, "connecting"
        )
        self._redis = redis
        ledger = TaskLedger(redis, s.redis_prefix, s.ledger_ttl_seconds)
        detector = self.detector
        returns = KafkaCooldownReturns(
            producer, returns_topic(s), s.partitions, detector.cooled_rules, self.metrics
        )
        self.tasks = TaskSink(
            producer,
            s.topic("tasks"),
            redis_stores(ledger),
            self.metrics,
            self.policy,
            frequency_cap=lambda: detector.rules.gating.frequency_cap,
            task_ttl=lambda rule_id, version: detector.rules.task_ttl(rule_id, version),
            returns=returns,
            withdrawals_topic=s.topic("task_withdrawals"),
        )
        self.dead_letters = DeadLetterSink(producer, s.topic("deadletter"), self.metrics)
        needed_topics = (s.topic("tasks"), s.topic("deadletter"), changelog_topic(s))
        for needed in needed_topics:  # at 0: panels read 0
            self.metrics.topic_missing.labels(needed)
        self.metrics.rules_loaded.set(len(self.detector.rules))
        self._declare_series(self.detector.rules)
        self._report_rules(self.detector.rules)
        for event_type in self.detector.topic_types.values():  # at 0: an alert sees the rise
            self.metrics.misplaced.labels(event_type.value)
        self.ready.set()
        log.info(
            "runtime ready: %d rule(s), tasks to %s", len(self.detector.rules), s.topic("tasks")
        )

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeStoppedError("the runtime is not started, or stopped")
        return self._producer

    async def stop(self) -> None:
        self.ready.clear()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await within(
                producer.stop(),
                LAST_FLUSH_S,
                "the records in flight",
                "their events will be read again",
            )
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def redrive(self) -> int:
        if self.tasks is None:
            return 0
        return await self.tasks.redrive(self.settings.pending_redrive_seconds)

    async def handle(
        self,
        records: Sequence[RawRecord],
        store: StateStore,
        owned: Callable[[], bool] | None = None,
    ) -> BatchResult:
        """Process one batch end to end; returns only when its outputs are durable.

        `owned` (the batch loop's): when it turned false while the batch's tasks were sent
        (a rebalance began: the batch waited on Redis past the revocation's bounded wait),
        the state is not written (`_publish`) nor the batch counted: the partitions' next
        owner reads its events again, and counts them."""
        async with self._state_lock:
            started = time.perf_counter()
            now = dt.datetime.now(dt.UTC)
            off = self.placement.check(records)
            misplaced: list[DeadLetter] = []
            if (profiles := self.settings.topic("profile")) in off:  # rare: look for tombstones
                records, misplaced = self.placement.misplaced_tombstones(records, profiles)
            erased = await self.erasures(records, store)
            result = self.detector.process(records, store.load, now, erased)
            if off:
                result.misplaced = self.misplaced_events(off, result)
            if misplaced:
                result.dead_letters.extend(misplaced)
                result.events[EventType.PROFILE.value] += len(misplaced)
            self.metrics.stage.labels(Stage.DETECT).observe(time.perf_counter() - started)
            self.clock.observe(result.watermarks, time.time())
            if await self._publish(result, store, owned, "batch"):
                self.record(result)
            self.metrics.processing.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(records))
            return result

    def misplaced_events(self, off: Counter[str], result: BatchResult) -> Counter[str]:
        """The batch's misplaced records (`off`, by topic) by event type, less those the
        detector skipped as already applied: counted with the batch's other counts once
        its output is durable (`record_batch`), a worker that ends without its last
        commit counted none of a batch it did not finish, and its successor, reading the
        rest again, does not count them twice (which made one burst of misplaced events
        fire MomentsEventsMisplaced when the restart came a few minutes after it). A
        record refused for its bytes is counted at each read, as its dead letter is sent
        again."""
        if result.replays:
            off = off - self.placement.misplaced(result.replays)
        types = self.detector.topic_types
        return Counter({types[topic].value: n for topic, n in off.items()})

    async def erasures(self, records: Sequence[RawRecord], store: StateStore) -> dict[str, float]:
        """When the batch's subscribers that have no record were erased, if they were: a
        late event of theirs dated before it is dropped (`Detector.process`). One Redis
        round trip, and only for a batch with subscribers new to the store."""
        if self.tasks is None:
            raise RuntimeError("the runtime is not started")
        return await self.tasks.subscribers.erasures(self.detector.unrecorded(records, store.has))

    async def handle_outcomes(self, records: Sequence[RawRecord]) -> None:
        """Outcomes from dispatch consumers: counted, `declined` suppresses the rule for the
        subscriber a while, `unreachable` queues a retry (see moments.outcomes)."""
        if self.tasks is None or self.dead_letters is None:
            raise RuntimeError("the runtime is not started")
        ahead = allowed_ahead(self.settings.lateness_seconds)
        result = await handle_outcomes(records, self.tasks, ahead_s=ahead)
        for dl in result.dead_letters:
            self.dead_letters.add(dl)
        await self.dead_letters.flush()

    async def sweep(
        self,
        store: StateStore,
        partitions: Sequence[int],
        still_ours: Callable[[], bool] = lambda: True,
    ) -> int | None:
        """Close finished windows for the silent subscribers of partitions whose event time
        moved on (see moments.eventclock); returns the tasks made, None when no partition
        was due.

        In chunks of `SWEEP_CHUNK` subscribers, each under the state lock and published
        before the next: batches run between chunks instead of waiting for the whole
        table (seconds with tens of thousands of subscribers). Each record is read when
        its chunk runs, so a batch in between is never overwritten; a window is closed at
        most once a local day (the record holds the day it was checked), so a subscriber a
        batch already brought up to date is left as is.
        When `still_ours()` turns false (a rebalance began, or took partitions away) the
        sweep stops; a chunk in flight then writes no record either (`_publish`), nor is it
        counted: the next owner restored the partitions without it and sweeps them again,
        making the same task ids, which the ledger stops, and counting their moments. A
        revocation waits for the chunk in flight (`settled`), so one whose records are
        being written finishes first."""
        async with self._state_lock:
            due = self.clock.due(partitions, time.time())
        if not due:
            return None
        records = store.items(list(due))
        made = swept = 0
        started = time.perf_counter()
        while True:
            async with self._state_lock:
                if not still_ours():
                    log.info("window sweep stopped: the partitions were reassigned")
                    return made
                chunk = list(itertools.islice(records, SWEEP_CHUNK))
                if chunk:
                    now = dt.datetime.now(dt.UTC)
                    result = sweep(self.detector, chunk, due.get, now, store.reread)
                    written = await self._publish(result, store, still_ours, "window sweep")
                    made += len(result.tasks)
                    swept += len(chunk)
                    if not written:  # the partitions went meanwhile: not marked swept
                        # Nor counted, as a batch not written: the next owner sweeps the
                        # records again and counts their moments (once, for the group).
                        return made
                    self.record(result, "window sweep")
            if len(chunk) < SWEEP_CHUNK:
                break
            await asyncio.sleep(0)  # let a waiting batch take the lock
        async with self._state_lock:
            self.clock.done(due)
        self._count_state(store, due)
        # Once an hour of event time per partition (and after a rebalance): a sweep reads
        # every record of its partitions, the figure to watch as the state grows.
        log.info(
            "window sweep of partition(s) %s: %d record(s) in %.1f s, %d task(s)",
            ",".join(map(str, sorted(due))),
            swept,
            time.perf_counter() - started,
            made,
        )
        return made

    def _count_state(self, store: StateStore, partitions: Collection[int]) -> None:
        """The swept partitions' records into the state gauges (the sweep read them all)."""
        for partition in partitions:
            census = store.census.get(partition)
            if census is not None:
                label = str(partition)
                self.metrics.state_subscribers.labels(label).set(census.subscribers)
                self.metrics.state_bytes.labels(label).set(census.stored_bytes)
                self._counted.add(partition)

    def forget(self, keep: Collection[int]) -> None:
        """After a rebalance: partitions no longer assigned leave the event clock and the
        state gauges (their new owner reports them)."""
        self.clock.forget(keep)
        for partition in self._counted - set(keep):
            self.metrics.state_subscribers.remove(str(partition))
            self.metrics.state_bytes.remove(str(partition))
            self._counted.discard(partition)

    async def settled(self) -> None:
        """Returns once no batch or sweep chunk holds the state: a revocation waits for it
        (`BatchConsumer.wait_empty`), so a chunk's changelog write is acknowledged before
        its partitions' next owner restores them, not landing after that owner's writes."""
        async with self._state_lock:
            pass

    async def _publish(
        self,
        result: BatchResult,
        store: StateStore,
        owned: Callable[[], bool] | None = None,
        what: str = "batch",
    ) -> bool:
        """Dead letters and tasks acknowledged, then the state and its changelog; False
        when `owned` kept the state from being written. The caller counts `result`.

        `owned` (a batch's or a window sweep chunk's, `what`): while false, the records
        are not written. The tasks may wait on Redis past a revocation's bounded wait; the
        records, read before it, written then, would land in the changelog after those of
        the partition's new owner and undo them at its next restore (a cooldown mark, an
        applied event). Not written, the tasks' ledger entries stand: whoever processes
        the events or sweeps the records next makes the same ids, stopped as duplicates,
        and the same marks. Checked once before the state is written, before each
        retry of its changelog write, and once the changelog acknowledged it (then the
        records are the changelog's only: this store keeps neither them nor their offset)."""
        if self.tasks is None or self.dead_letters is None:
            raise RuntimeError("the runtime is not started")
        stage = self.metrics.stage
        started = time.perf_counter()
        if result.forgotten:  # before the batch's facts: events after a tombstone are new
            rule_ids = [r.id for r in self.detector.rules.rules]
            await self.tasks.subscribers.forget(
                result.forgotten, rule_ids, result.erased_at, made_after(result)
            )
            warn_odd_deletions(result.deletions)
        if result.unknown_opt_outs:
            self._unknown_channels.warn(result.unknown_opt_outs)
        if result.facts:
            await self.tasks.subscribers.record_facts(result.facts)
            stage.labels(Stage.FACTS).observe(time.perf_counter() - started)
            started = time.perf_counter()
        if result.failures:
            log_failures(result.failures)
        for dl in result.dead_letters:
            self.dead_letters.add(dl)
        changes = profile_changes(result.facts, result.forgotten, result.erased_at, time.time())
        if changes:
            # Published tasks the batch's opt-outs, closed lines and tombstones made void:
            # withdrawn before the state is written, so a crash re-reads the batch and
            # withdraws again what it had not recorded, under the same task ids. Looked up
            # before the batch's own tasks go out, not after: those are judged by their
            # confirm against the facts just recorded (`TaskSink._send`), so one of an
            # event read before the opt-out is withdrawn there, and one made after the
            # tombstone (the number's new holder) or after an opt-in or a reactivation
            # again is not. Looked up after them, every one of the subscriber's was
            # withdrawn, the new holder's as `forgotten`.
            await self.tasks.withdrawals.withdraw(changes)
        for task in result.tasks:
            self.tasks.add(task, rejudged=task.task_id in result.rejudged)
        await self.dead_letters.flush()
        dropped = await self.tasks.flush()
        # Before the state is written: a crash then reads the batch again, and the ledger
        # says again which of its tasks were dropped.
        give_back_cooldowns(result, dropped)
        take_over_cooldowns(result, self.tasks.took_over())
        stage.labels(Stage.DISPATCH).observe(time.perf_counter() - started)
        if owned is not None and not owned():
            _not_written(what, result)
            return False
        started = time.perf_counter()
        # The consumer generation the batch's partitions are held in (the app's ownership
        # check knows it): the changelog records are stamped with it (moments.fence).
        try:
            saved = store.save(result.changes, getattr(owned, "generation", None))
        except Exception:  # a damaged record the detector did not read, or not the records'
            mend_unwritable(result)
            saved = store.save(result.changes, getattr(owned, "generation", None))
        state_s = time.perf_counter() - started  # and the local write after the changelog
        changelog = saved.records
        if changelog:
            # Write-ahead: the changelog acknowledges the records before the store keeps
            # them (`FaustTableStore`); until then they are pending, and a write abandoned
            # here, or by an error or a cancellation, is dropped: never a local record the
            # changelog lacks.
            started = time.perf_counter()

            async def write() -> dict[int, int] | None:
                if owned is not None and not owned():
                    return None  # retried past a revocation's wait: see above
                return await produce_to_partitions(
                    self._require_producer(), store.changelog_topic, changelog, saved.headers
                )

            try:
                written = await with_retry(
                    write,
                    Dependency.KAFKA,
                    self.metrics,
                    "writing the state changelog",
                    # Deleted since the start: held, named with its own fix, not an outage.
                    needed_topic=store.changelog_topic,
                    topic_fix=changelog_fix(self.settings, store.changelog_topic),
                    producer=self._producer,  # asked afresh whether the topic is there
                )
            except BaseException:
                store.discard(saved)
                raise
            stage.labels(Stage.CHANGELOG).observe(time.perf_counter() - started)
            if written is not None and owned is not None and not owned():
                # Sent while ours, acknowledged once a rebalance began: the changelog has
                # the records, this store keeps neither them nor their offset (whoever
                # holds the partitions after the rebalance, this worker too, restores
                # them from the changelog). Kept once the partitions went (the broker slow
                # past the revocation's wait), the offset claimed the records the next
                # owner wrote before them, which a RocksDB volume given the partition back
                # then never read. Nor is the batch counted or marked.
                store.discard(saved)
                stage.labels(Stage.STATE).observe(state_s)
                log.info(
                    "%s: its %d state record(s) reached the changelog after a rebalance "
                    "began; not kept here (whoever holds their partitions next restores "
                    "them, and reads or sweeps the batch again)",
                    what,
                    len(result.changes),
                )
                return False
            if written is None:
                store.discard(saved)
                stage.labels(Stage.STATE).observe(state_s)
                _not_written(what, result)
                return False
            started = time.perf_counter()
            store.persisted(saved, written)
            state_s += time.perf_counter() - started
        stage.labels(Stage.STATE).observe(state_s)
        return True

    def record(self, result: BatchResult, what: str = "batch") -> None:
        """Count a batch's or a window sweep chunk's result (`what`), once it is durable."""
        record_batch(self.metrics, result)
        if result.damaged:  # said once the mended records are written (once each)
            shown = (lambda n: n) if self.settings.log_pii else mask_msisdn
            topic = changelog_topic(self.settings)
            report_damaged(self.metrics, result, shown, topic, what)
        if self._warming and self.detector.live_from is not None and result.watermarks:
            newest = max(result.watermarks.values())
            if newest >= self.detector.live_from.timestamp():
                self._warming = self._all_shadow = False
                log.info(
                    "live: events dated from MOMENTS_LIVE_FROM %s on are read; their "
                    "moments make tasks",
                    self.detector.live_from.isoformat(),
                )


def changelog_fix(settings: Settings, topic: str) -> str:
    """How to make the state changelog `topic` again once it was deleted under running
    workers, for the line of a write held on it (`sinks.retry.with_retry`, `topic_fix`).
    Not an output topic's "restart a worker": a worker restarted first restores its
    partitions from the empty topic it makes, and knows none of their subscribers."""
    return (
        f"create it again, compacted, with MOMENTS_PARTITIONS partitions, before any worker "
        f"restarts: kafka-topics.sh --bootstrap-server {settings.kafka_bootstrap} --create "
        f"--topic {topic} --partitions {settings.partitions} --replication-factor "
        f"{settings.replication_factor} --config cleanup.policy=compact; the held write "
        "then goes through. The state records written before the deletion are gone from "
        "Kafka: the running workers keep theirs, a worker that restores a partition from "
        'the topic does not (docs/operations.md, "MomentsTopicMissing")'
    )


class UnknownChannels:
    """Logs each opt-out channel name moments does not send on once per worker (at most
    `LIMIT` names: they come from producers), so an upstream team can see what this version
    does not send on."""

    LIMIT = 64

    def __init__(self) -> None:
        self.said: set[str] = set()

    def warn(self, names: Mapping[str, int]) -> None:
        new = sorted(n for n in names if n not in self.said)[: self.LIMIT - len(self.said)]
        if new:
            self.said.update(new)
            log.warning(
                "profile updates opt out of channels this version does not send on: %s; kept "
                "for a newer version that may, the rest of each profile applied "
                "(moments_profile_unknown_opt_outs_total; each name is said once)",
                ", ".join(repr(n) for n in new),
            )


def warn_odd_deletions(deletions: Mapping[str, int]) -> None:
    """Say so when profile deletions came as JSON null or an empty value: applied, but a
    compacted topic keeps those records, key and all, where a null value goes."""
    odd = ", ".join(f"{n} as {form}" for form, n in sorted(deletions.items()) if form != TOMBSTONE)
    if odd:
        log.warning(
            "profile deletions sent without a null value (%s): the subscribers are forgotten, "
            "but compaction keeps such records with their keys; the producer should send a "
            "null value (kafka-python: a value_serializer that passes None through; "
            "docs/producing-events.md, 'Deleting a subscriber')",
            odd,
        )


async def create_topics(
    settings: Settings,
    topics: dict[str, int],
    metrics: Metrics,
    what: str,
    max_delay: float = 5.0,
    judged: Mapping[str, int] | None = None,
) -> None:
    """`ensure_topics` with the settings' replication factor and credentials, retried
    with back-off while Kafka cannot be reached (counted in the metrics as `what`); a
    topic of the count `judged` names is left to the caller to say (`ensure_topics`)."""
    await with_retry(
        lambda: ensure_topics(
            settings.kafka_bootstrap,
            topics,
            replication_factor=settings.replication_factor,
            client_kwargs=kafka_client_kwargs(settings),
            judged=judged,
        ),
        Dependency.KAFKA,
        metrics,
        what,
        max_delay=max_delay,
    )


def _not_written(what: str, result: BatchResult) -> None:
    log.info(
        "%s: a rebalance began while its tasks were sent; its %d state record(s) not "
        "written (their partitions' next owner reads or sweeps them again)",
        what,
        len(result.changes),
    )


def record_batch(m: Metrics, result: BatchResult) -> None:
    """A batch's counts into the metrics (the backtest's report reads the same counters),
    their series looked up through `Metrics.children` (not `labels()` each time)."""
    of = m.children.of
    for event_type, n in result.misplaced.items():  # before the events they are among
        of(m.misplaced, event_type).inc(n)
    for event_type, n in result.events.items():
        of(m.events, event_type).inc(n)
    for (family, moment_type), n in result.detected.items():
        of(m.detected, family, moment_type).inc(n)
    for (moment_type, suppressed), n in result.suppressed.items():
        of(m.suppressed, moment_type, suppressed.value).inc(n)
    for (rule_id, outcome, why), n in result.shadow.items():
        of(m.shadow, rule_id, outcome, why).inc(n)
    if result.replayed:
        m.replayed.inc(result.replayed)
    for outcome, n in result.returns.items():
        of(m.cooldown_returns, outcome).inc(n)
    if result.unknown_opt_outs:
        m.unknown_opt_outs.inc(result.unknown_opt_outs.total())
    for form, n in result.deletions.items():
        of(m.profile_deletions, form).inc(n)
    for event_type, n in result.erased_events.items():
        of(m.erased_events, event_type).inc(n)
    for reason, n in result.deferred.items():
        of(m.deferred, reason).inc(n)
    for event_type, n in result.out_of_order.items():
        of(m.out_of_order, event_type).inc(n)
    if result.late:
        of(m.out_of_time, "late").inc(result.late)
    if result.future:
        of(m.out_of_time, "future").inc(result.future)


def _check_names(path: Path | None, policy: DispatchPolicy, rules: Callable[[], RuleSet]) -> None:
    """`check_rule_ids` against the rules, read only when the policy names rules."""
    if "overflow" in policy.model_fields_set or "relevance" in policy.model_fields_set:
        held = rules().rules
        check_rule_ids(path, policy, (r.id for r in held), (r.task.moment_type for r in held))
