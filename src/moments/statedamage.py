"""Damaged subscriber records, as the batch loop and the window sweep met them: counted in
`moments_state_records_damaged_total{kind}` and logged once each, the subscriber masked.

What reads them (`Detector.process`, `moments.sweep`) mends them and writes them back
sound, so each is said once: again only if its batch is not written (a rebalance), and
its partition's next owner reads it. docs/architecture.md, "State", says what a reset
costs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from moments.enums import StateDamage
from moments.state import UNREADABLE
from sinks.metrics import Metrics

log = logging.getLogger(__name__)


def report_damaged(
    metrics: Metrics, damaged: Mapping[str, str], shown: Callable[[str], str]
) -> None:
    """Count and log each damaged record (`BatchResult.damaged`); `shown` masks the
    subscriber (`moments.pii.mask_msisdn`, unless MOMENTS_LOG_PII)."""
    for sub, what in damaged.items():
        if what == UNREADABLE:
            metrics.state_damaged.labels(StateDamage.UNREADABLE.value).inc()
            done = "held no record it could read: begun afresh"
        else:
            metrics.state_damaged.labels(StateDamage.MALFORMED.value).inc()
            done = f"had fields of shapes the detector never writes ({what}): those reset"
        log.warning(
            "subscriber %s: the state record %s and written back so, the subscriber's "
            'events applied; what was reset is forgotten (docs/architecture.md, "State": a '
            "first-time moment may fire again). Many of these: check what writes the state "
            "changelog topic, and the store's volume",
            shown(sub),
            done,
        )
