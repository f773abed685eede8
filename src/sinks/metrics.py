"""The project's Prometheus metrics, in their own `moments_` namespace and in seconds.

A container over an injected `CollectorRegistry` (each test uses a fresh one);
no label ever carries a subscriber id.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from moments.decoding import DELETION_FORMS
from moments.enums import DeferralReason, ReturnResult, StateDamage
from moments.models import Channel, EventType
from moments.records import (
    INPUT_ONLY_REASONS,
    OUTCOME_EVENT_TYPE,
    OUTCOME_ONLY_REASONS,
    RejectReason,
)
from sinks.writewaits import WRITE_WAITS

LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75),
    *(1, 2.5, 5, 10, 30, 60, 300, 3600),
)
"""Event to task. Close steps around the 250 ms goal: between 0.25 and 0.5 alone, a p99
read by histogram_quantile could only say "somewhere up to twice the goal"."""
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Dependency(StrEnum):
    REDIS = "redis"
    KAFKA = "kafka"


class Stage(StrEnum):
    """The steps of a batch, the `stage` label of `moments_batch_stage_seconds`."""

    DETECT = "detect"
    FACTS = "facts"
    DISPATCH = "dispatch"
    STATE = "state"
    CHANGELOG = "changelog"


GC_GENERATIONS = ("0", "1", "2")
"""The garbage collector's generations (`gc.callbacks` reports 0 to 2)."""


class NewerRead(StrEnum):
    """What read a stored task a newer version wrote (`moments_tasks_newer_version_total`'s
    `kind`)."""

    REDRIVE = "redrive"
    RELEASE = "release"
    WITHDRAWAL = "withdrawal"
    OUTCOME = "outcome"


class TimerStep(StrEnum):
    """The re-drive timer's steps (`TaskSink.redrive`), the `step` label of
    `moments_timer_errors_total`."""

    RELEASE = "release"
    REDRIVE = "redrive"
    COOLDOWN_RETURNS = "cooldown_returns"
    WITHDRAWALS = "withdrawals"
    EXPIRY = "expiry"


class RefusalReason(StrEnum):
    """Why Kafka refused a publish whose records were left owed in Redis, the `reason` label
    of `moments_owed_refused_total` (`sinks.steps.refusal_reason`)."""

    AUTHORIZATION = "authorization"
    """The worker's principal may not write the topic (an ACL)."""
    UNKNOWN_TOPIC = "unknown_topic"
    """The broker has no such topic (deleted after the worker started: `sinks.retry`,
    `MISSING_TOPIC_ATTEMPTS`): create it again."""
    OTHER = "other"
    """Any other refusal waiting does not cure (a record refused, a request the broker
    does not support): the `sinks.refusals` line names it."""


OWING_STEPS = (TimerStep.COOLDOWN_RETURNS, TimerStep.WITHDRAWALS)
"""The timer steps that send what a refused publish left owed: the `step` label of
`moments_owed_refused_total`."""


class OversizeOutcome(StrEnum):
    """What became of a dead letter refused for its size (`DeadLetterSink`)."""

    SENT_WITHOUT_VALUE = "sent_without_value"
    NOT_SENT = "not_sent"


class Metrics:
    """The contract's metrics and the project's own, as prometheus_client collectors on
    one registry: callers record on them directly (`metrics.published.labels(...).inc()`).
    Label values of a closed set come from an enum: `RejectReason`, `SuppressReason`,
    `DeferralReason`, `Dependency`, `Stage`. Every series whose label values are known
    up front starts at 0 (here, or per moment type of the rules in force in
    `Runtime._declare_series`): a series born at its first increment has no sample
    before it, so a fresh worker's panels read "No data" and `rate()` misses that first
    increment. Left to their first value: labels of partitions, regions, rule ids."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.children = Children()
        """Children of these metrics handed out again (`Children`): a batch's counts."""
        r = self.registry
        self.events = Counter(
            "moments_events_total", "Input events consumed", ["event_type"], registry=r
        )
        for event_type in EventType:  # MomentsDeadLetterSpike's denominator: from 0 too
            self.events.labels(event_type.value)
        self.rejected = Counter(
            "moments_events_rejected",
            "Input records sent to the dead-letter topic",
            ["event_type", "reason"],
            registry=r,
        )
        # At 0 from the start, every reason a record of each kind can be refused for: a
        # series born at its first dead letter has no sample before it, so `rate()` (and
        # MomentsDeadLetterSpike) missed that first batch (31 records in the ops drill).
        for event_type in EventType:
            for reason in RejectReason:
                if reason not in OUTCOME_ONLY_REASONS:
                    self.rejected.labels(event_type.value, reason.value)
        for reason in RejectReason:
            if reason not in INPUT_ONLY_REASONS:
                self.rejected.labels(OUTCOME_EVENT_TYPE, reason.value)
        self.detected = Counter(
            "moments_detected",
            "Moments that fired, before gating",
            ["family", "moment_type"],
            registry=r,
        )
        self.shadow = Counter(
            "moments_shadow_moments",
            "Moments of rules in shadow mode, which make no task: task (one would be made "
            "now), deferred or suppressed, as the gates decided",
            ["rule_id", "outcome", "reason"],
            registry=r,
        )
        self.published = Counter(
            "moments_tasks_published",
            "Service tasks published to the dispatch topic",
            ["moment_type", "channel"],
            registry=r,
        )
        self.suppressed = Counter(
            "moments_tasks_suppressed",
            "Tasks not published: dedup, cooldown, opt-out, capacity, expired",
            ["moment_type", "reason"],
            registry=r,
        )
        self.withdrawn = Counter(
            "moments_tasks_withdrawn",
            "Published, unexpired tasks withdrawn by a later opt-out of their channel, a "
            "closed line or a forgotten subscriber (moments.task-withdrawals)",
            ["moment_type", "reason"],
            registry=r,
        )
        self.deferred = Counter(
            "moments_tasks_deferred", "Tasks moved later by do-not-disturb", ["reason"], registry=r
        )
        for deferral in DeferralReason:  # from 0: a series born at its first deferral has
            self.deferred.labels(deferral.value)  # no sample before it, `rate()` missed it
        self.waiting = Gauge(
            "moments_tasks_waiting", "Tasks waiting in the deferral queue", registry=r
        )
        self.earliest_due = Gauge(
            "moments_tasks_earliest_due_timestamp_seconds",
            "When the first task waiting in the deferral queue is due (0: none waits); "
            "long past means releases are not happening",
            registry=r,
        )
        self.event_to_task = Histogram(
            "moments_event_to_task_seconds",
            "Event time to task publish",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "moments_processing_seconds",
            "Time to process one batch, publish included",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "moments_batch_stage_seconds",
            "Time of one step of a batch: detect, facts, dispatch, state, changelog",
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        for stage in Stage:
            self.stage.labels(stage.value)
        self.gc_pause = Histogram(
            "moments_gc_pause_seconds",
            "Garbage-collector pauses of the worker, by generation (the hourly full "
            "collection shows as generation 2)",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        for generation in GC_GENERATIONS:
            self.gc_pause.labels(generation)
        self.batch_size = Histogram(
            "moments_batch_records",
            "Records per processed batch",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.outcomes = Counter(
            "moments_task_outcomes",
            "Task outcomes reported by dispatch consumers",
            ["moment_type", "status"],
            registry=r,
        )
        self.unanswered = Gauge(
            "moments_tasks_unanswered",
            "Published tasks no outcome came back for yet, by channel (read from Redis at "
            "each re-drive tick: every worker shows the same figure, so take max())",
            ["channel"],
            registry=r,
        )
        self.unanswered_expired = Counter(
            "moments_tasks_unanswered_expired",
            "Published tasks that expired (and then the outcome grace passed) with no "
            "outcome at all: the channel's dispatch consumer did not report back",
            ["channel", "moment_type"],
            registry=r,
        )
        for channel in Channel:  # at 0 from the start
            self.unanswered.labels(channel.value).set(0)
        self.rules_loaded = Gauge("moments_rules_loaded", "Rules in force", registry=r)
        self.live_from = Gauge(
            "moments_live_from_timestamp_seconds",
            "MOMENTS_LIVE_FROM as epoch seconds (0: unset): moments dated before it make no "
            "task, every rule counted as a shadow rule (moments_shadow_moments_total)",
            registry=r,
        )
        self.build_info = Gauge(
            "moments_build_info",
            "1, labelled with the versions this worker runs (moments, Python, Faust, "
            "aiokafka): a rolling update is done when every worker shows the new one",
            ["version", "python", "faust", "aiokafka"],
            registry=r,
        )
        self.rule_info = Gauge(
            "moments_rule_info",
            "1 for each rule in force, by id, version and mode (live or shadow): workers "
            "that differ hold different rules",
            ["rule_id", "version", "mode"],
            registry=r,
        )
        self.rules_reload = Counter(
            "moments_rules_reload", "Rule reload attempts", ["result"], registry=r
        )
        for result in ("ok", "error"):  # from 0: the first refusal is a rise
            self.rules_reload.labels(result)
        self.loop_stalled = Gauge(
            "moments_event_loop_stalled_seconds",
            "Seconds since the worker's event loop last ran, read at scrape time: it grows "
            "while the loop is stuck (every other series then stands still)",
            registry=r,
        )
        self.rules_refused = Gauge(
            "moments_rules_refused",
            "1 while the rules file on disk is refused (the rules in force stay, "
            "moments_rule_info and the log line name them, but a restart with that file exits)",
            registry=r,
        )
        self.policy_refused = Gauge(
            "moments_dispatch_policy_refused",
            "1 while the dispatch policy file on disk is refused (the policy in force stays, "
            "the log line names its limits and hours, but a restart with that file exits)",
            registry=r,
        )
        self.deadletters_oversize = Counter(
            "moments_deadletters_oversize",
            "Dead letters refused by the producer or the broker for their size: "
            "sent_without_value (sent again with an empty value) or not_sent",
            ["outcome"],
            registry=r,
        )
        for outcome in OversizeOutcome:
            self.deadletters_oversize.labels(outcome.value)
        self.replayed = Counter(
            "moments_events_replayed",
            "Events skipped because they were applied before "
            "(re-read after a restart, or delivered twice)",
            registry=r,
        )
        self.profile_deletions = Counter(
            "moments_profile_deletions",
            "Profile deletions applied (subscribers forgotten), by form on the wire: "
            "tombstone (a null value), json_null or empty (erased all the same, but kept "
            "by compaction with their key: fix the producer's serializer)",
            ["kind"],
            registry=r,
        )
        self.erased_events = Counter(
            "moments_events_forgotten",
            "Events of subscribers a profile tombstone erased, dated before the erasure and "
            "read after it (a topic read behind the profile topic): dropped, not applied "
            "and not dead-lettered (their payload is the erased subscriber's data)",
            ["event_type"],
            registry=r,
        )
        self.unknown_opt_outs = Counter(
            "moments_profile_unknown_opt_outs",
            "Opt-out channels of profile updates that moments does not send on (email): "
            "no rule of this version's reads them, the rest of the profile applied; kept for "
            "a newer version that may send on one (its tasks there withdrawn); each name is "
            "logged once per worker",
            registry=r,
        )
        self.cooldown_returns = Counter(
            "moments_cooldown_returns",
            "Cooldowns of tasks dropped after waiting, as the engine applied them: "
            "given_back (the mark removed), stale (a later task's mark, or none), malformed",
            ["result"],
            registry=r,
        )
        for result in ReturnResult:
            self.cooldown_returns.labels(result.value)
        self.out_of_time = Counter(
            "moments_events_out_of_time",
            "Events not applied: later than the allowed lateness, or dated in the future",
            ["kind"],
            registry=r,
        )
        for kind in (RejectReason.LATE, RejectReason.FUTURE):  # from 0: `rate()` sees the first
            self.out_of_time.labels(kind.value)
        self.out_of_order = Counter(
            "moments_events_out_of_order",
            "Events applied though older than their subscriber's newest of the same topic "
            "and not among its recent event ids: late events, or a producer's re-sent "
            "events older than the ids remembered (applied twice)",
            ["event_type"],
            registry=r,
        )
        self.misplaced = Counter(
            "moments_events_misplaced",
            "Events on another partition than murmur2 of their key names: a producer with "
            "another partitioner, or a topic with another partition count (state splits)",
            ["event_type"],
            registry=r,
        )
        self.pending_redriven = Counter(
            "moments_tasks_redriven",
            "Pending tasks sent again after an unconfirmed publish",
            registry=r,
        )
        self.newer_tasks = Counter(
            "moments_tasks_newer_version",
            "Stored tasks with a channel or moment family this version does not know (a "
            'newer version wrote them; docs/operations.md, "Rolling upgrades"), by what read '
            "them: left to a newer worker (redrive, release), withdrawn or an outcome "
            "applied as far as this version can (withdrawal, outcome)",
            ["kind"],
            registry=r,
        )
        for read_by in NewerRead:  # from 0, for alerts
            self.newer_tasks.labels(read_by.value)
        self.timer_errors = Counter(
            "moments_timer_errors",
            "Errors a step of the re-drive timer raised that waiting did not cure (a Kafka "
            "refusal, a bug), by step; those of the cooldown returns and withdrawals are "
            "retried with back-off at later ticks, the others stop the worker",
            ["step"],
            registry=r,
        )
        for step in TimerStep:  # from 0: `increase()` and the alert see the first
            self.timer_errors.labels(step.value)
        self.owed_refused = Counter(
            "moments_owed_refused",
            "Withdrawals and cooldown returns a batch's or decision's publish had refused by "
            "Kafka (a broker away is waited out instead: moments_dependency_errors_total), "
            "left owed in Redis for the re-drive timer's step, by step and reason",
            ["step", "reason"],
            registry=r,
        )
        for owing in OWING_STEPS:
            for refusal in RefusalReason:
                self.owed_refused.labels(owing.value, refusal.value)
        self.timer_failing = Gauge(
            "moments_timer_failures_in_a_row",
            "The failures in a row of a re-drive timer step tried again at later ticks "
            "(cooldown_returns, withdrawals, expiry) on this worker, held between its tries "
            "(MomentsTimerErrors); 0 once a try went through (the others stop the worker)",
            ["step"],
            registry=r,
        )
        for step in TimerStep:
            self.timer_failing.labels(step.value)
        self.dependency_errors = Counter(
            "moments_dependency_errors",
            "Failed calls to Redis or Kafka (retried with back-off)",
            ["dependency"],
            registry=r,
        )
        self.dependency_up = Gauge(
            "moments_dependency_up",
            "1 when the last call to the dependency succeeded",
            ["dependency"],
            registry=r,
        )
        self.topic_missing = Gauge(
            "moments_topic_missing",
            "Writes held because the broker has no such topic (UNKNOWN_TOPIC_OR_PARTITION "
            "five times in a row: deleted after the worker started), by topic: the tasks "
            "and dead-letter topics and the state changelog, whose batch waits for them, "
            "its offsets not committed; "
            "Kafka answers, so moments_dependency_up stays 1; 0 when none is held",
            ["topic"],
            registry=r,
        )
        self.write_wait = Gauge(
            "moments_kafka_write_wait_seconds",
            "Seconds the oldest Kafka write still awaiting the broker's acknowledgements has "
            "waited; 0 when none waits. A write fails at 120 s and is tried again; past 10 s "
            "the broker does not acknowledge (away, too few in-sync replicas, a partition "
            "without a leader), and a line of sinks.writewaits says so",
            registry=r,
        )
        self.write_wait.set_function(WRITE_WAITS.oldest_s)  # read at each scrape
        self.state_subscribers = Gauge(
            "moments_state_subscribers",
            "Subscribers whose record the worker holds, by partition (counted at each "
            "window sweep, hourly)",
            ["partition"],
            registry=r,
        )
        self.state_bytes = Gauge(
            "moments_state_bytes",
            "Bytes of those records as stored (compressed), by partition (counted at each "
            "window sweep, hourly)",
            ["partition"],
            registry=r,
        )
        self.stale_state_records = Counter(
            "moments_state_stale_records_skipped",
            "State changelog records not restored: stamped by a previous owner of the "
            "partition, they landed after a later owner's record of the same subscriber "
            "(a write held up past a rebalance), by partition",
            ["partition"],
            registry=r,
        )
        self.state_damaged = Counter(
            "moments_state_records_damaged",
            "Subscriber records read damaged and mended, by kind: unreadable (begun afresh) "
            "or malformed (the fields of shapes the detector never writes reset)",
            ["kind"],
            registry=r,
        )
        for damage in StateDamage:  # from 0: `rate()` and alerts see the first
            self.state_damaged.labels(damage.value)
        self.up_of = {dep: self.dependency_up.labels(dep.value) for dep in Dependency}
        """Each dependency's `moments_dependency_up` series, looked up once (`with_retry`
        sets it on every call: `labels()` took 1% of a backtest)."""
        for dep in Dependency:
            self.up_of[dep].set(1)
            # A zero series from the start, so rate() and alerts see 0 rather than nothing.
            self.dependency_errors.labels(dep.value)
        for form in DELETION_FORMS:
            self.profile_deletions.labels(form)
        for event_type in EventType:
            self.erased_events.labels(event_type.value)
            self.out_of_order.labels(event_type.value)


_Metric = TypeVar("_Metric", bound=MetricWrapperBase)


class Children:
    """The series (children) of labelled metrics by their label values, handed out again
    without `labels()`: its checks, a generator of `str` and a lock cost ~8 Python calls a
    look-up, and a batch's counts look up a dozen (`moments.runtime.record_batch`,
    ~64,000 in a 300,000-event backtest). A child kept is handed out only while its metric
    still holds it under those values: one removed since (`drop_series` at a rules reload,
    `clear`, `remove`) is made again by `labels()`, so no count goes to a series no longer
    exposed. The values are the label values as `labels()` keeps them (`str`s; a `StrEnum`
    member is one). Label values of a metric are few (under 10 each), so are the keys."""

    def __init__(self) -> None:
        self._kept: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def of(self, metric: _Metric, *values: str) -> _Metric:
        """`metric.labels(*values)`, the child kept when its metric still holds it."""
        key = (metric, values)
        kept = self._kept
        if key in kept:
            child = kept[key]
            held = metric._metrics  # the children prometheus_client holds (private)
            if values in held and held[values] is child:
                return child  # type: ignore[return-value]
        made = metric.labels(*values)
        kept[key] = made
        return made


def drop_series(counter: Counter, keep: Callable[[dict[str, str]], bool]) -> None:
    """Remove each of `counter`'s series whose labels `keep` refuses: a label value gone
    (a moment type no rule in force makes). A series removed and born again later starts
    at 0; `rate()` reads the fall as a counter reset."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and not keep(sample.labels):
                # the labels come in the order they were declared in: `remove` takes it
                counter.remove(*sample.labels.values())


class DispatchMetrics:
    """Metrics of the dispatch policy (deferral, capacity, contact cap, merge window),
    registered on the same registry as `Metrics`; created once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.capacity_left = Gauge(
            "moments_capacity_left",
            "Tasks the region's channel may still take today (configured limits only)",
            ["region", "channel"],
            registry=r,
        )
        self.released = Counter(
            "moments_tasks_released",
            "Tasks taken from the deferral queue when their time came",
            registry=r,
        )
        self.merged = Counter(
            "moments_tasks_merged",
            "Tasks merged into a waiting task of the same subscriber (merge window)",
            ["moment_type"],
            registry=r,
        )
        self.overflow = Counter(
            "moments_tasks_overflow",
            "Tasks over a channel's daily capacity, by the overflow policy applied",
            ["moment_type", "policy"],
            registry=r,
        )

    @classmethod
    def of(cls, metrics: Metrics) -> DispatchMetrics:
        found = _DISPATCH_METRICS.get(metrics)
        if found is None:
            found = _DISPATCH_METRICS[metrics] = cls(metrics.registry)
        return found


_DISPATCH_METRICS: weakref.WeakKeyDictionary[Metrics, DispatchMetrics] = weakref.WeakKeyDictionary()
