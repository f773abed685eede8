"""Every metric the contract lists exists on a worker's registry with its labels, and no
metric has a label that could carry a subscriber id."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from moments.consumer_metrics import ConsumerMetrics
from sinks.metrics import DispatchMetrics, Metrics

from .catalogs import default_rules

CONTRACT = {
    "moments_events_total": ("counter", {"event_type"}),
    "moments_events_rejected_total": ("counter", {"event_type", "reason"}),
    "moments_detected_total": ("counter", {"family", "moment_type"}),
    "moments_tasks_published_total": ("counter", {"moment_type", "channel"}),
    "moments_tasks_suppressed_total": ("counter", {"moment_type", "reason"}),
    "moments_tasks_deferred_total": ("counter", {"reason"}),
    "moments_tasks_waiting": ("gauge", set()),
    "moments_event_to_task_seconds": ("histogram", set()),
    "moments_processing_seconds": ("histogram", set()),
    "moments_task_outcomes_total": ("counter", {"moment_type", "status"}),
    "moments_rules_loaded": ("gauge", set()),
    "moments_rules_reload_total": ("counter", {"result"}),
}
"""The contract's metrics list (shared/spec/contract.md), with type and labels."""


def collectors(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    found = {}
    for collector in list(registry._collector_to_names):
        name = collector._name  # type: ignore[attr-defined]
        kind = collector._type  # type: ignore[attr-defined]
        full = f"{name}_total" if kind == "counter" else name
        found[full] = (kind, set(collector._labelnames))  # type: ignore[attr-defined]
    return found


def test_the_contracts_metrics_exist_with_their_labels() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    found = collectors(registry)
    for name, (kind, labels) in CONTRACT.items():
        assert name in found, f"{name} missing"
        assert found[name] == (kind, labels), name
    exposition = generate_latest(registry).decode()
    for name, (kind, _) in CONTRACT.items():
        # prometheus_client names a counter's family with or without `_total`, as declared.
        families = {name, name.removesuffix("_total")}
        assert any(f"# TYPE {family} {kind}" in exposition for family in families), name


def test_no_label_could_carry_a_subscriber_id() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    DispatchMetrics.of(metrics)
    ConsumerMetrics(registry)
    labels = set().union(*(labels for _, labels in collectors(registry).values()))
    assert labels <= {
        "event_type",
        "reason",
        "family",
        "moment_type",
        "channel",
        "status",
        "result",
        "kind",
        "dependency",
        "topic",
        "partition",
        "region",
        "policy",
        "stage",
        "step",  # the re-drive timer's steps (sinks.metrics.TimerStep)
        "generation",
        "rule_id",  # a rule's id starts with a letter (rules.spec): never an MSISDN
        "outcome",
        "version",  # a rule's version: a number from the rules file; a package version
        "mode",  # live or shadow
        "python",  # moments_build_info: versions of what a worker runs
        "faust",
        "aiokafka",
    }


def documented() -> dict[str, tuple[str, set[str]]]:
    """The metric table of docs/operations.md: name -> (type, labels)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    table: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`moments_"):
            continue
        labels = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[2])))
        for name in re.findall(r"`(moments_[a-z_]+)`", cells[0]):
            table[name] = (cells[1], labels)
    return table


def test_every_metric_a_worker_serves_is_in_the_operations_guide() -> None:
    """docs/operations.md, Metrics: what ops read when a panel or an alert names one."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    DispatchMetrics.of(metrics)
    ConsumerMetrics(registry)
    served = collectors(registry)
    table = documented()
    assert set(served) == set(table), set(served) ^ set(table)
    for name, (kind, labels) in served.items():
        assert table[name] == (kind, labels), name


def test_the_changelog_lists_every_metric_beyond_the_contract() -> None:
    """CHANGELOG.md tells the teams that depend on the contract what it adds."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "CHANGELOG.md").read_text()
    section = text.split("### Metrics", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"`(moments_[a-z_]+)`", section))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    DispatchMetrics.of(metrics)
    ConsumerMetrics(registry)
    assert listed == set(collectors(registry)) - set(CONTRACT)


class TestSuppressReasons:
    """The `reason` of moments_tasks_suppressed_total is a `SuppressReason`: one list that
    the contract's reasons, gating's and the operations guide's are all in."""

    def test_the_contracts_reasons_are_members(self) -> None:
        from moments.records import SuppressReason

        contract = {"dedup", "cooldown", "opt_out", "capacity", "expired"}
        assert contract <= set(SuppressReason)

    def test_every_reason_gating_suppresses_for_is_a_member(self) -> None:
        """Gating (src/rules) names its reasons itself; all but quiet hours (which only
        defer) can suppress, and the engine counts them as they are."""
        from typing import get_args

        from moments.records import SuppressReason
        from rules.gating import Reason

        assert set(get_args(Reason)) - {"quiet_hours"} <= set(SuppressReason)

    def test_the_operations_guide_names_each_one(self) -> None:
        import re
        from pathlib import Path

        from moments.records import SuppressReason

        text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
        row = next(
            line for line in text.splitlines() if line.startswith("| `moments_tasks_suppressed_")
        )
        described = row.rsplit("|", 2)[1]
        assert set(re.findall(r"`([a-z_]+)`", described)) == set(SuppressReason)


def test_every_dead_letter_series_is_at_zero_before_the_first() -> None:
    """A series born at its first dead letter has no sample before it, so `rate()` and
    MomentsDeadLetterSpike missed that first batch (the ops drill's first 31 records of a
    renamed field); only `detector_error` started at 0."""
    from moments.records import OUTCOME_EVENT_TYPE

    registry = CollectorRegistry()
    Metrics(registry)
    samples = {
        (s.labels["event_type"], s.labels["reason"]): s.value
        for metric in registry.collect()
        if metric.name == "moments_events_rejected"
        for s in metric.samples
        if s.name == "moments_events_rejected_total"
    }
    for event_type in ("topup", "roaming", "complaint", "usage", "profile"):
        for reason in ("invalid_json", "invalid_event", "late", "future", "too_large"):
            assert samples[(event_type, reason)] == 0.0
    assert samples[("profile", "misplaced")] == 0.0
    for reason in (
        "invalid_json",
        "unknown_task",
        "subscriber_mismatch",
        "duplicate_key",
        "future",
    ):
        assert samples[(OUTCOME_EVENT_TYPE, reason)] == 0.0
    assert (OUTCOME_EVENT_TYPE, "late") not in samples
    assert ("usage", "unknown_task") not in samples


def test_every_event_type_is_counted_from_0() -> None:
    """`moments_events_total` is MomentsDeadLetterSpike's denominator (and the "events
    flow" of MomentsNothingDetectedWhileEventsFlow): born at a type's first batch, that
    batch was missing from `rate()` while its dead letters, at 0 from the start, were in:
    the share refused read high after every worker start."""
    registry = CollectorRegistry()
    Metrics(registry)
    samples = {
        s.labels["event_type"]: s.value
        for metric in registry.collect()
        if metric.name == "moments_events"
        for s in metric.samples
        if s.name == "moments_events_total"
    }
    assert samples == dict.fromkeys(("topup", "roaming", "complaint", "usage", "profile"), 0.0)


async def test_an_outcome_dated_ahead_is_refused_on_a_series_at_0() -> None:
    """An outcome dated too far ahead is a dead letter `future` of `task_outcome`; that
    series was left out as input-only, so it was born at its first dead letter."""
    import datetime as dt

    from moments.backtest import CollectingProducer, EventTime
    from moments.models import OutcomeStatus, TaskOutcome
    from moments.outcomes import handle_outcomes
    from moments.records import RawRecord
    from sinks.dispatch import TaskSink
    from sinks.memory import memory_stores
    from sinks.policy import DispatchPolicy

    now = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
    clock = EventTime(now.timestamp())
    metrics = Metrics()
    before = {
        (s.labels["event_type"], s.labels["reason"])
        for metric in metrics.registry.collect()
        if metric.name == "moments_events_rejected"
        for s in metric.samples
        if s.name == "moments_events_rejected_total"
    }
    sink = TaskSink(
        CollectingProducer(clock), "moments.tasks", memory_stores(clock), metrics,
        DispatchPolicy(), clock,
    )  # fmt: skip
    ahead = TaskOutcome(
        task_id="a" * 32,
        subscriber_id="13800138001",
        status=OutcomeStatus.DECLINED,
        occurred_at=now + dt.timedelta(days=1),
    )
    value = ahead.model_dump_json().encode()
    record = RawRecord("moments.task-outcomes", 0, 0, b"13800138001", value)
    result = await handle_outcomes([record], sink, now=now)
    [letter] = result.dead_letters
    assert letter.reason.value == "future"
    assert (letter.event_type, letter.reason.value) in before


def test_the_events_not_applied_for_their_time_are_counted_from_0() -> None:
    """The overview's "Replayed and out-of-time events/s" reads
    `rate(moments_events_out_of_time_total)` by kind; its `late` and `future` series were
    born at a worker's first such event, with no sample before it, so `rate()` left out
    that first batch: a producer's clock an hour ahead after a worker start showed nothing
    until its second batch, while the same records' dead letters (at 0 from the start)
    did show."""
    registry = CollectorRegistry()
    Metrics(registry)
    samples = {
        s.labels["kind"]: s.value
        for metric in registry.collect()
        if metric.name == "moments_events_out_of_time"
        for s in metric.samples
        if s.name == "moments_events_out_of_time_total"
    }
    assert samples == {"late": 0.0, "future": 0.0}


def _samples(registry: CollectorRegistry, sample: str) -> dict[tuple[str, ...], float]:
    """The values of the samples called `sample`, by their label values."""
    return {
        tuple(s.labels.values()): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == sample
    }


def test_every_series_of_a_closed_set_of_labels_starts_at_0() -> None:
    """A series born at its first increment has no sample before it: a fresh worker's
    panels showed "No data" instead of 0, and `rate()`/`increase()` left out the first
    batch (the stage latency panels, the garbage-collector pauses, the oversize dead
    letters, the cooldown returns, the erased and the out-of-order events)."""
    registry = CollectorRegistry()
    Metrics(registry)
    stages = {"detect", "facts", "dispatch", "state", "changelog"}
    counts = _samples(registry, "moments_batch_stage_seconds_count")
    assert counts == {(stage,): 0.0 for stage in stages}
    gc = _samples(registry, "moments_gc_pause_seconds_count")
    assert gc == {("0",): 0.0, ("1",): 0.0, ("2",): 0.0}
    oversize = _samples(registry, "moments_deadletters_oversize_total")
    assert oversize == {("sent_without_value",): 0.0, ("not_sent",): 0.0}
    returns = _samples(registry, "moments_cooldown_returns_total")
    assert returns == {("given_back",): 0.0, ("stale",): 0.0, ("malformed",): 0.0}
    every_type = {(t,): 0.0 for t in ("topup", "roaming", "complaint", "usage", "profile")}
    assert _samples(registry, "moments_events_forgotten_total") == every_type
    assert _samples(registry, "moments_events_out_of_order_total") == every_type


def test_every_moment_types_suppressions_merges_and_overflows_start_at_0() -> None:
    """`moments_tasks_suppressed_total` by reason (and the dispatch policy's merges and
    overflows) were born at the first task held: the "Suppressed by reason" panel of a
    fresh worker read "No data", and the first suppressions of a reason were missing from
    `rate()`. Each moment type of the rules in force is declared at 0 with the rules."""
    from moments.engine import Detector
    from moments.records import SuppressReason
    from moments.runtime import Runtime
    from moments.settings import load_settings
    from sinks.policy import OverflowPolicy

    rules = default_rules()
    registry = CollectorRegistry()
    runtime = Runtime(load_settings(), Metrics(registry), Detector(rules, {}))
    runtime.install_rules(rules)
    types = {r.task.moment_type for r in rules.rules}
    suppressed = _samples(registry, "moments_tasks_suppressed_total")
    assert suppressed == {(t, reason.value): 0.0 for t in types for reason in SuppressReason}
    merged = _samples(registry, "moments_tasks_merged_total")
    assert merged == {(t,): 0.0 for t in types}
    overflow = _samples(registry, "moments_tasks_overflow_total")
    assert overflow == {(t, policy.value): 0.0 for t in types for policy in OverflowPolicy}


def test_unknown_opt_outs_are_not_said_to_be_ignored() -> None:
    """An opt-out of a channel this version does not send on is kept and acted on for a
    newer version in a rolling upgrade (its tasks there withdrawn): the counter's help
    and the operations guide said "ignored", which is what an on-call engineer would
    believe of the customer's refusal."""
    registry = CollectorRegistry()
    Metrics(registry)
    text = generate_latest(registry).decode()
    (help_line,) = [
        line
        for line in text.splitlines()
        if line.startswith("# HELP moments_profile_unknown_opt_outs_total ")
    ]
    assert "ignored" not in help_line
    assert "newer version" in help_line
    guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    (row,) = [r for r in guide.splitlines() if r.startswith("| `moments_profile_unknown_opt")]
    assert "ignored" not in row
    assert "newer version" in row
