"""Damaged subscriber records, as the batch loop and the window sweep met them: counted in
`moments_state_records_damaged_total{kind}` and logged once each, the subscriber masked.

What reads them (`Detector.process`, `moments.sweep`) mends them and writes them back
sound, so each is said once: again only if its batch is not written (a rebalance), and
its partition's next owner reads it. docs/architecture.md, "State", says what a reset
costs. The metric is registered beside `sinks.metrics.Metrics`, on its registry.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter

from moments.state import UNREADABLE
from sinks.metrics import Metrics

log = logging.getLogger(__name__)


class Damage(StrEnum):
    """The `kind` of `moments_state_records_damaged_total`."""

    UNREADABLE = "unreadable"
    """Bytes that hold no record (not zstd or JSON, cut short): begun afresh."""
    MALFORMED = "malformed"
    """Fields of shapes the detector never writes: those reset, the rest kept."""


class StateMetrics:
    """The state's own figures, on the same registry as `Metrics`; one per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.damaged = Counter(
            "moments_state_records_damaged",
            "Subscriber records read damaged and mended, by kind: unreadable (begun afresh) "
            "or malformed (the fields of shapes the detector never writes reset)",
            ["kind"],
            registry=registry,
        )
        for kind in Damage:  # from 0: `rate()` and alerts see the first
            self.damaged.labels(kind.value)

    @classmethod
    def of(cls, metrics: Metrics) -> StateMetrics:
        found = _STATE_METRICS.get(metrics)
        if found is None:
            found = _STATE_METRICS[metrics] = cls(metrics.registry)
        return found


_STATE_METRICS: weakref.WeakKeyDictionary[Metrics, StateMetrics] = weakref.WeakKeyDictionary()


def report_damaged(
    metrics: StateMetrics, damaged: Mapping[str, str], shown: Callable[[str], str]
) -> None:
    """Count and log each damaged record (`BatchResult.damaged`); `shown` masks the
    subscriber (`moments.pii.mask_msisdn`, unless MOMENTS_LOG_PII)."""
    for sub, what in damaged.items():
        if what == UNREADABLE:
            metrics.damaged.labels(Damage.UNREADABLE.value).inc()
            done = "held no record it could read: begun afresh"
        else:
            metrics.damaged.labels(Damage.MALFORMED.value).inc()
            done = f"had fields of shapes the detector never writes ({what}): those reset"
        log.warning(
            "subscriber %s: the state record %s and written back so, the subscriber's "
            'events applied; what was reset is forgotten (docs/architecture.md, "State": a '
            "first-time moment may fire again). Many of these: check what writes the state "
            "changelog topic, and the store's volume",
            shown(sub),
            done,
        )
