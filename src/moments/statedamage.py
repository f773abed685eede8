"""Damaged subscriber records, as the batch loop and the window sweep met them: counted in
`moments_state_records_damaged_total{kind}` and logged once each, the subscriber masked.

What reads them (`Detector.process`, `moments.sweep`) mends them and writes them back
sound, so each is said once: again only if its batch is not written (a rebalance), and
its partition's next owner reads it. docs/architecture.md, "State", says what a reset
costs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from moments.batchresult import BatchResult
from moments.enums import StateDamage
from moments.state import UNREADABLE
from sinks.metrics import Metrics

log = logging.getLogger(__name__)


def report_damaged(
    metrics: Metrics,
    result: BatchResult,
    shown: Callable[[str], str],
    changelog: str,
    what: str = "batch",
) -> None:
    """Count and log each damaged record (`BatchResult.damaged`); `shown` masks the
    subscriber (`moments.pii.mask_msisdn`, unless MOMENTS_LOG_PII).

    The line says where the record is, the subscriber being masked: its partition of
    the state changelog (`changelog`), keyed by the subscriber, where it was read from
    and is written back (its latest record there now, the damaged one the key's record
    before it, unless a store's volume damaged it); and what met it: the event, by topic,
    partition and offset (`BatchResult.damaged_at`), or a window sweep (`what`)."""
    for sub, reset in result.damaged.items():
        if reset == UNREADABLE:
            metrics.state_damaged.labels(StateDamage.UNREADABLE.value).inc()
            done = "held no record it could read: begun afresh"
        else:
            metrics.state_damaged.labels(StateDamage.MALFORMED.value).inc()
            done = f"had fields of shapes the detector never writes ({reset}): those reset"
        change = result.changes.get(sub)
        where = "" if change is None else f" in {changelog}[{change.partition}]"
        if (met := result.damaged_at.get(sub)) is not None:
            by = f"the event at {met[0]}[{met[1]}] offset={met[2]}"  # kept whole in the log
        else:
            by = "a window sweep" if what == "window sweep" else f"the write of a {what}"
        log.warning(
            "subscriber %s: the state record%s, met by %s, %s and written back so, the "
            "subscriber's events applied; what was reset is forgotten (docs/architecture.md, "
            '"State": a first-time moment may fire again). Many of these: check what writes '
            "the state changelog topic, and the store's volume",
            shown(sub),
            where,
            by,
            done,
        )
