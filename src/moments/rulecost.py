"""What the rules cost per event, and what state they keep per subscriber, measured in
process on the benchmark's events (no broker): part of `moments bench`."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from moments.decoding import decode
from moments.engine import Detector
from moments.models import EventType
from moments.records import RawRecord
from moments.store import DictStateStore
from rules.catalog import RuleSet, load_rules
from rules.rule import state_tag


@dataclass(frozen=True)
class RuleCost:
    label: str
    rules: int
    events_per_s: float
    us_per_event: float
    state_bytes: float
    """Average bytes of state per subscriber after the run."""


def widened(rules: RuleSet, total: int) -> RuleSet:
    """The catalog's rules copied under new ids until there are `total` (200 rules)."""
    out = list(rules.rules)
    n = 0
    while len(out) < total:
        base = rules.rules[n % len(rules.rules)]
        n += 1
        rule_id = f"{base.id}.copy{n}"
        out.append(replace(base, id=rule_id, tag=state_tag(rule_id), _cache={}))
    return RuleSet.of(out, rules.sources, rules.series, rules.gating, rules.special)


def measure(label: str, rules: RuleSet, records: Sequence[RawRecord]) -> RuleCost:
    detector = Detector(rules, {t.value: t for t in EventType})
    store = DictStateStore()
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for start in range(0, len(records), 5000):
        result = detector.process(records[start : start + 5000], store.load, now)
        store.save(result.changes)
    elapsed = time.perf_counter() - started
    size = sum(len(v) for v in store.data.values()) / max(len(store.data), 1)
    rate = len(records) / elapsed
    return RuleCost(label, len(rules), rate, 1e6 / rate, size)


def rule_costs(
    events: Sequence[tuple[EventType, bytes, bytes]], rules: RuleSet | None = None
) -> list[RuleCost]:
    """No rules, the catalog (configured or default), and 200 rules, on the same events."""
    catalog = rules if rules is not None else load_rules()
    records = [RawRecord(t.value, 0, i, k, v) for i, (t, k, v) in enumerate(events)]
    return [
        measure("no rules (decode, dedup, state)", RuleSet.of([]), records),
        measure("the catalog", catalog, records),
        measure("200 rules", widened(catalog, 200), records),
    ]


def decode_cost(events: Sequence[tuple[EventType, bytes, bytes]]) -> float:
    """Microseconds per event to validate the events and nothing else: the floor under
    every other figure, since each event is validated against the contract's model."""
    records = [RawRecord(t.value, 0, i, k, v) for i, (t, k, v) in enumerate(events)]
    started = time.perf_counter()
    for record in records:
        decode(record, EventType(record.topic))
    return (time.perf_counter() - started) * 1e6 / max(len(records), 1)
